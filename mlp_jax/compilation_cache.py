"""JAX's persistent compilation cache, shared by training, serving and batch prediction."""

from __future__ import annotations

import os
from pathlib import Path

#: Size cap of the cache folder; the least recently used programs are evicted past it.
MAX_BYTES = 2 << 30


def enable() -> str | None:
    """Turns on JAX's persistent compilation cache (``MLP_JAX_COMPILATION_CACHE``; ``off`` disables).

    Small programs compile in under the default 1 s threshold and would never be cached,
    so the threshold is set to 0. The cache is per machine and trusted input.

    Several processes share the folder (a sweep beside a server, the test suite's workers):
    with ``filelock`` installed the cache is capped at :data:`MAX_BYTES` with LRU eviction,
    which also makes JAX take a file lock around every read and write, so no process reads an
    entry another is half-way through writing. Without it (JAX's default) entries are written
    in place, unlocked and never evicted; a torn read costs a warning and a fresh compile.

    Returns:
      The cache folder, or None when the cache is off.
    """
    import jax

    where = os.environ.get("MLP_JAX_COMPILATION_CACHE", str(Path.home() / ".cache" / "mlp-jax" / "jax"))
    if where.lower() in ("", "off", "0", "false", "none"):
        return None
    jax.config.update("jax_compilation_cache_dir", where)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    try:
        import filelock  # noqa: F401  (what JAX's cache locks with once a size cap is set)
    except ImportError:  # the GPU image may lack it: JAX's unbounded, unlocked default
        pass
    else:
        jax.config.update("jax_compilation_cache_max_size", MAX_BYTES)
    return where
