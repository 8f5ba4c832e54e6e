"""JAX's persistent compilation cache, shared by training, serving and batch prediction."""

from __future__ import annotations

import os
from pathlib import Path


def enable() -> str | None:
    """Turns on JAX's persistent compilation cache (``MLP_JAX_COMPILATION_CACHE``; ``off`` disables).

    Small programs compile in under the default 1 s threshold and would never be cached,
    so the threshold is set to 0. The cache is per machine and trusted input.
    """
    import jax

    where = os.environ.get("MLP_JAX_COMPILATION_CACHE", str(Path.home() / ".cache" / "mlp-jax" / "jax"))
    if where.lower() in ("", "off", "0", "false", "none"):
        return None
    jax.config.update("jax_compilation_cache_dir", where)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return where
