"""The persistent compilation cache (mlp_jax/compilation_cache.py), in fresh processes of their own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.helpers import ROOT

PROGRAM = """
import jax, jax.numpy as jnp
from jax._src import monitoring
from mlp_jax import compilation_cache
hits = []
monitoring.register_event_listener(lambda event, **kw: hits.append(event) if event.endswith("cache_hits") else None)
print("dir", compilation_cache.enable())
print("max", jax.config.jax_compilation_cache_max_size)
jax.block_until_ready(jax.jit(lambda x: jnp.tanh(x) @ x.T)(jnp.ones((8, 8))))
print("hits", len(hits))
"""


def _run(cache: str) -> dict[str, str]:
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "MLP_JAX_COMPILATION_CACHE": cache, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", PROGRAM], env=env, capture_output=True, text=True, timeout=120, check=True
    )
    assert "Error reading persistent compilation cache" not in out.stderr, out.stderr
    assert "Error writing persistent compilation cache" not in out.stderr, out.stderr
    return dict(line.split(" ", 1) for line in out.stdout.splitlines())


def test_second_process_reads_the_program_and_the_cache_is_capped_and_locked(tmp_path: Path):
    from mlp_jax.compilation_cache import MAX_BYTES

    cache = tmp_path / "cache"
    first = _run(str(cache))
    assert first == {"dir": str(cache), "max": str(MAX_BYTES), "hits": "0"}
    entries = [p for p in cache.iterdir() if p.name.endswith("-cache")]
    assert entries, sorted(p.name for p in cache.iterdir())
    assert (cache / ".lockfile").exists(), "a capped cache reads and writes under a file lock"
    assert _run(str(cache))["hits"] == str(len(entries))  # the second process compiled nothing


def test_off_leaves_jax_without_a_cache(tmp_path: Path):
    assert _run("off") == {"dir": "None", "max": "-1", "hits": "0"}


def test_entries_written_without_the_cap_get_access_times_and_writes_keep_working(tmp_path: Path):
    """An entry from a process that wrote without the size cap (no ``-atime`` file) used to make
    every later write fail with a warning, so the cache stopped growing."""
    from mlp_jax.compilation_cache import add_missing_access_times

    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "jit_stray-0123-cache").write_bytes(b"an entry written without the cap")
    first = _run(str(cache))  # asserts no read or write error was printed
    assert first["hits"] == "0"
    assert (cache / "jit_stray-0123-atime").exists()
    written = [p for p in cache.iterdir() if p.name.endswith("-cache") and "stray" not in p.name]
    assert written, "the program was not written to the cache"
    assert _run(str(cache))["hits"] == str(len(written))
    assert add_missing_access_times(cache) == 0  # every entry has one now
    assert add_missing_access_times(tmp_path / "missing") == 0
