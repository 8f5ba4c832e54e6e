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
