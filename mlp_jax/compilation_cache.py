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
        add_missing_access_times(Path(where))
        jax.config.update("jax_compilation_cache_max_size", MAX_BYTES)
    return where


def add_missing_access_times(folder: Path, timeout_s: float = 10.0) -> int:
    """Gives every entry of a capped cache the access-time file JAX's eviction needs; returns how many.

    With a size cap, JAX keeps ``<key>-atime`` beside each ``<key>-cache`` entry and reads
    every one of them before each write (``jax._src.lru_cache``). An entry written without
    the cap (an older version of this project, a process without ``filelock``, JAX's own
    default) has none, and from then on every write fails with a FileNotFoundError warning:
    the cache silently stops growing. Such entries get their file's modification time as
    their last access, under the lock JAX itself takes. Nothing is done when the lock stays
    taken past ``timeout_s`` (another process is busy in the cache; it will be repaired next time).
    """
    import filelock

    if not folder.is_dir():
        return 0
    added = 0
    try:
        with filelock.FileLock(folder / ".lockfile", timeout=timeout_s):
            for entry in folder.glob("*-cache"):
                stamp = entry.with_name(entry.name.removesuffix("-cache") + "-atime")
                if stamp.exists():
                    continue
                try:
                    when = entry.stat().st_mtime_ns
                except FileNotFoundError:  # evicted meanwhile by a process not taking the lock
                    continue
                stamp.write_bytes(when.to_bytes(8, "little"))
                added += 1
    except (filelock.Timeout, OSError):
        return added
    return added
