"""Joining several processes into one JAX program with ``jax.distributed``.

One code path for 1 or N devices and 1 or N processes: the fit loop builds a 1-D
``data`` mesh over ``jax.devices()`` (every device of every process), replicates the
train state, and shards each batch along the mesh; XLA inserts the collectives.
"""

from __future__ import annotations

import math
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from mlp_jax.config import ConfigError, DistConfig


class DistributedError(RuntimeError):
    """The processes could not be joined (coordinator unreachable, timeout)."""


@dataclass(frozen=True)
class ProcessInfo:
    coordinator_address: str
    num_processes: int
    process_id: int

    @property
    def is_distributed(self) -> bool:
        return self.num_processes > 1


def resolve(cfg: DistConfig) -> ProcessInfo:
    """Config fields, falling back to ``JAX_COORDINATOR_ADDRESS`` / ``JAX_NUM_PROCESSES`` / ``JAX_PROCESS_ID``."""
    address = cfg.coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS", "")
    try:
        n = cfg.num_processes or int(os.environ.get("JAX_NUM_PROCESSES", "1"))
        pid = cfg.process_id if cfg.process_id >= 0 else int(os.environ.get("JAX_PROCESS_ID", "0"))
    except ValueError as e:
        raise ConfigError(f"dist: JAX_NUM_PROCESSES / JAX_PROCESS_ID must be integers ({e})") from None
    if n > 1 and not address:
        raise ConfigError("dist.coordinator_address: needed (host:port of process 0) when num_processes > 1")
    if not 0 <= pid < max(n, 1):
        raise ConfigError(f"dist.process_id: {pid} is not in [0, {n})")
    return ProcessInfo(address, max(n, 1), pid)


def initialize(cfg: DistConfig) -> ProcessInfo:
    """Calls ``jax.distributed.initialize`` when more than one process is configured.

    Must run before JAX creates its backends (before any array is made).

    Raises:
      DistributedError: when the coordinator cannot be reached within ``timeout_seconds``.
    """
    info = resolve(cfg)
    if not info.is_distributed or jax.distributed.is_initialized():
        return info
    if info.process_id != 0:
        # jaxlib aborts the whole process (SIGABRT, no Python exception) when the coordinator
        # never answers; probing the TCP port first turns that into a clear, catchable error.
        wait_for_coordinator(info.coordinator_address, cfg.timeout_seconds, info)
    # Only the CPU client reads this; asking jax.default_backend() here would create the
    # backends before initialize(), which must come first.
    jax.config.update("jax_cpu_collectives_implementation", cfg.cpu_collectives)
    try:
        jax.distributed.initialize(
            coordinator_address=info.coordinator_address,
            num_processes=info.num_processes,
            process_id=info.process_id,
            initialization_timeout=cfg.timeout_seconds,
        )
    except Exception as e:  # jaxlib raises XlaRuntimeError / RuntimeError with a long gRPC message
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DistributedError(
            f"process {info.process_id} of {info.num_processes} could not join the coordinator at "
            f"{info.coordinator_address} within {cfg.timeout_seconds} s: {first}"
        ) from None
    return info


def wait_for_coordinator(address: str, timeout: float, info: ProcessInfo | None = None) -> None:
    """Returns once ``host:port`` accepts TCP connections; DistributedError after ``timeout`` seconds."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"dist.coordinator_address: {address!r} is not host:port")
    who = f"process {info.process_id} of {info.num_processes}" if info else "this process"
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=min(1.0, timeout)):
                return
        except OSError as e:
            if time.monotonic() >= deadline:
                raise DistributedError(
                    f"{who} could not reach the coordinator at {address} within {timeout:g} s ({e}); "
                    f"is process 0 running and the address right?"
                ) from None
            time.sleep(0.2)


def is_primary() -> bool:
    """True on the process that writes summaries, plots and tracking (process 0)."""
    return jax.process_index() == 0


# ----------------------------------------------------------------------------- meshes and placement


#: True once :func:`use_cpu_cores` has made the CPU devices (not the user's own device count).
_CPU_DEVICES_PER_CORE = False


def _cgroup_dirs(controller: str, root: Path, proc_cgroup: Path) -> list[Path]:
    """The cgroup directories whose ``controller`` limits apply to this process: its own and each ancestor.

    Read from ``/proc/self/cgroup``: ``0::/path`` is the unified (v2) hierarchy, mounted at
    ``root`` (or ``root/unified`` on a hybrid host); ``N:cpu,cpuacct:/path`` a v1 one, mounted at
    ``root/cpu,cpuacct`` or ``root/cpu``. Directories that do not exist are left out.
    """
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return []
    dirs: list[Path] = []
    for line in lines:
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and controllers == "":
            bases = [root, root / "unified"]
        elif controller in controllers.split(","):
            bases = [root / controllers, root / controller]
        else:
            continue
        for base in bases:
            # the cgroup's folder and its ancestors up to the mount root; without a cgroup namespace a
            # container's /proc/self/cgroup names a host path (/docker/<id>) that is not under the
            # container's mount, whose root is then the container's own cgroup: read that too
            d = base / path.strip().lstrip("/")
            while d != base and base in d.parents:
                if d.is_dir():
                    dirs.append(d)
                d = d.parent
            if base.is_dir():
                dirs.append(base)
    return list(dict.fromkeys(dirs))


def _read_first(d: Path, name: str) -> str | None:
    try:
        return (d / name).read_text().partition("\n")[0].strip()
    except OSError:
        return None


def cgroup_cpu_quota(
    root: Path = Path("/sys/fs/cgroup"), proc_cgroup: Path = Path("/proc/self/cgroup")
) -> float | None:
    """Cores' worth of CPU time a cgroup quota allows this process (``docker --cpus 1.5`` -> 1.5); None if unlimited.

    The smallest quota of the process's cgroup and its ancestors: v2 ``cpu.max`` ("max 100000" or
    "150000 100000"), v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` (-1: none). Unreadable or
    malformed files count as no limit.
    """
    quotas = []
    for d in _cgroup_dirs("cpu", root, proc_cgroup):
        v2 = _read_first(d, "cpu.max")
        if v2 is not None:
            parts = v2.split()
            if len(parts) == 2 and parts[0] != "max":
                try:
                    quotas.append(int(parts[0]) / int(parts[1]))
                except (ValueError, ZeroDivisionError):
                    pass
            continue
        quota, period = _read_first(d, "cpu.cfs_quota_us"), _read_first(d, "cpu.cfs_period_us")
        try:
            if quota is not None and period is not None and int(quota) > 0:
                quotas.append(int(quota) / int(period))
        except (ValueError, ZeroDivisionError):
            pass
    return min(quotas) if quotas else None


def cgroup_memory_limit(
    root: Path = Path("/sys/fs/cgroup"), proc_cgroup: Path = Path("/proc/self/cgroup")
) -> int | None:
    """Bytes a cgroup memory limit allows this process (``docker --memory``); None if unlimited.

    The smallest of v2 ``memory.max`` ("max": none) and v1 ``memory.limit_in_bytes`` (v1 writes
    ~2**63 for none) over the process's cgroup and its ancestors.
    """
    limits = []
    for d in _cgroup_dirs("memory", root, proc_cgroup):
        for name in ("memory.max", "memory.limit_in_bytes"):
            v = _read_first(d, name)
            if v is not None and v.isdigit() and int(v) < 2**62:
                limits.append(int(v))
    return min(limits) if limits else None


def usable_cores() -> int:
    """CPU cores this process can use: its CPU affinity, capped by a cgroup CPU quota rounded down (at least 1).

    ``os.cpu_count()`` and the affinity both see every core of the host inside a container
    started with ``--cpus``; one CPU device per host core there would time-slice the quota.
    """
    cores = len(os.sched_getaffinity(0))
    quota = cgroup_cpu_quota()
    return max(1, min(cores, int(quota))) if quota is not None else cores


def usable_memory_bytes() -> int:
    """Physical memory, capped by a cgroup memory limit (a container's ``--memory``)."""
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    limit = cgroup_memory_limit()
    return min(physical, limit) if limit is not None else physical


def use_cpu_cores() -> int:
    """Asks JAX for one CPU device per core this process may run on; returns the CPU devices JAX makes.

    For sweeps (``python -m experiments.sweep`` calls it): XLA:CPU runs one device's program on
    about one core for networks this small, so members sharded over per-core devices train side
    by side (measured in ``mlp_jax.sweep``'s docstring). A single model's batches gain nothing
    from them, so :func:`make_mesh` keeps one device of those it made.

    Must run before JAX's backends start (before any array is made): afterwards, and when the
    user chose a count (``XLA_FLAGS=--xla_force_host_platform_device_count=N``, ``JAX_NUM_CPU_DEVICES``
    or ``jax_num_cpu_devices``), it changes nothing. Harmless on an accelerator host (JAX's default
    devices are then the accelerators). Cores: :func:`usable_cores` (affinity, capped by a container's quota).
    """
    global _CPU_DEVICES_PER_CORE
    from jax._src import xla_bridge  # no public way to ask whether the backends have started

    chosen = (
        "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", "")
        or os.environ.get("JAX_NUM_CPU_DEVICES")
        or jax.config.jax_num_cpu_devices != -1
    )
    if not chosen and not xla_bridge.backends_are_initialized():
        jax.config.update("jax_num_cpu_devices", usable_cores())
        _CPU_DEVICES_PER_CORE = True
    return len(jax.devices("cpu"))


def make_mesh(num_devices: int = 0) -> jax.sharding.Mesh:
    """A 1-D ``data`` mesh over the first ``num_devices`` devices (0 = all).

    0 means one device when the devices are the per-core CPU devices that :func:`use_cpu_cores`
    made for a sweep (one run's batches split over them trained slower), e.g. a single run in
    the same process or notebook after a sweep.
    """
    devices = jax.devices()
    n = len(devices) if num_devices == 0 else num_devices
    if num_devices == 0 and _CPU_DEVICES_PER_CORE and devices[0].platform == "cpu" and jax.process_count() == 1:
        n = 1
    if n > len(devices):
        raise ConfigError(f"train.num_devices: {n} requested but only {len(devices)} device(s) visible")
    return jax.make_mesh((n,), ("data",), axis_types=(jax.sharding.AxisType.Auto,), devices=devices[:n])


def put_replicated(tree: Any, sharding: NamedSharding) -> Any:
    """Places a host/local pytree on every device of the mesh (every process passes the same values)."""
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)
    return jax.tree.map(lambda a: jax.make_array_from_callback(np.shape(a), sharding, lambda i: np.asarray(a)[i]), tree)


def put_rows(x: np.ndarray, sharding: NamedSharding) -> jax.Array:
    """The training rows on the mesh.

    One process: replicated on every local device (each device gathers its batch rows
    locally). Several processes: zero-padded to a multiple of the device count and
    sharded by rows, each process holding only its own contiguous block; the epoch's
    gather of shuffled rows then becomes a collective that XLA inserts.
    """
    mesh = sharding.mesh
    if jax.process_count() == 1:
        return jax.device_put(x, NamedSharding(mesh, P()))
    n_dev = mesh.devices.size
    padded = math.ceil(len(x) / n_dev) * n_dev
    x = np.concatenate([x, np.zeros((padded - len(x), *x.shape[1:]), x.dtype)])
    per_process = padded // jax.process_count()
    mine = x[jax.process_index() * per_process : (jax.process_index() + 1) * per_process]
    return jax.make_array_from_process_local_data(sharding, mine, x.shape)


def local_copy(tree: Any) -> Any:
    """A replicated (possibly multi-process) pytree as host numpy arrays of this process."""
    return jax.tree.map(lambda a: np.asarray(a.addressable_data(0)) if isinstance(a, jax.Array) else a, tree)
