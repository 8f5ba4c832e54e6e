"""Data parallelism over 8 CPU devices and over 2 real processes, checked against 1 device."""

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from mlp_jax import artifact as A
from tests.helpers import ROOT, write_tiny_csv

pytestmark = pytest.mark.slow  # end to end: subprocesses, servers, whole runs

EIGHT = "--xla_force_host_platform_device_count=8"
COMMON = {
    "model.hidden_sizes": "32,16",
    "train.epochs": "4",
    "train.batch_size": "64",
    "train.patience": "0",
    "train.checkpoint_every": "2",
    "train.progress": "false",
    "train.compare_sklearn": "false",
    "tracking.enabled": "false",
    "train.members": "1",  # one model's device layouts (auto would train these 600 rows as an 8-seed ensemble)
}


def _env(devices: int = 1) -> dict[str, str]:
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env["XLA_FLAGS"] = EIGHT if devices == 8 else ""
    return env


def _cmd(csv: Path, workdir: Path, **extra: str) -> list[str]:
    items = {**COMMON, "data.path": str(csv), "workdir": str(workdir), **extra}
    return [sys.executable, "-m", "experiments.baseline", *(f"{k}={v}" for k, v in items.items())]


def _run(cmd: list[str], devices: int = 1) -> str:
    out = subprocess.run(cmd, cwd=ROOT, env=_env(devices), capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def _history(workdir: Path) -> list[dict]:
    return list(A.read_meta_at(workdir).history)


def _params(workdir: Path) -> list[np.ndarray]:
    return [np.asarray(a) for a in jax.tree.leaves(A.load(workdir).params)]


def _assert_same_training(a: Path, b: Path, rtol: float) -> None:
    ha, hb = _history(a), _history(b)
    assert [h["epoch"] for h in ha] == [h["epoch"] for h in hb]
    for key in ("train_loss", "val_loss", "train_accuracy", "val_accuracy"):
        np.testing.assert_allclose([h[key] for h in ha], [h[key] for h in hb], rtol=rtol, err_msg=key)
    for x, y in zip(_params(a), _params(b), strict=True):  # restored here, on this process's 1 device
        np.testing.assert_allclose(x, y, rtol=1e-3, atol=1e-5)
    sa, sb = (json.loads((w / "summary.json").read_text()) for w in (a, b))
    assert sa["test_loss"] == pytest.approx(sb["test_loss"], rel=rtol)
    assert abs(sa["test_accuracy"] - sb["test_accuracy"]) <= 1 / 300  # at most one test row flips


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same tiny run on 1 device and on 8 devices."""
    tmp = tmp_path_factory.mktemp("dist")
    csv = write_tiny_csv(tmp / "d.csv", n=2000)
    one, eight = tmp / "one", tmp / "eight"
    _run(_cmd(csv, one))
    log = _run(_cmd(csv, eight), devices=8)
    return csv, one, eight, log


def test_eight_devices_match_one_device(runs):
    _, one, eight, log = runs
    assert "8 cpu device(s) over 1 process(es)" in log and "train state replicated" in log
    assert json.loads((eight / "summary.json").read_text())["n_devices"] == 8
    assert json.loads((one / "summary.json").read_text())["n_devices"] == 1
    _assert_same_training(one, eight, rtol=1e-4)


def test_state_is_replicated_and_batch_is_sharded_on_eight_devices():
    script = textwrap.dedent(
        """
        import jax, numpy as np
        from jax.sharding import NamedSharding, PartitionSpec as P
        from mlp_jax import artifact as A, config as C, distributed as D, train as T
        mesh = D.make_mesh(0)
        assert mesh.devices.size == 8
        cfg = C.apply_overrides(C.Config(), ["model.hidden_sizes=128,64"])
        state = D.put_replicated(T.create_state(cfg, A.NetworkSpec(20, 2, cfg.model.hidden_sizes), 1024), NamedSharding(mesh, P()))
        for leaf in jax.tree.leaves(state):
            assert leaf.sharding.is_fully_replicated and len(leaf.sharding.device_set) == 8
        x = D.put_rows(np.zeros((1024, 20), np.float32), NamedSharding(mesh, P("data")))
        y = D.put_rows(np.zeros(1024, np.int32), NamedSharding(mesh, P("data")))
        fn = T.make_train_epoch(256, NamedSharding(mesh, P("data")), 1024, NamedSharding(mesh, P()))
        hlo = fn.lower(state, x, y, T.epoch_key(0, 1)).compile().as_text()
        # after SPMD partitioning each device multiplies a 256/8 = 32-row slice by the first layer
        assert "f32[32,128]{1,0} dot(" in hlo and "f32[256,128]{1,0} dot(" not in hlo
        assert "all-reduce(" in hlo  # the gradient sum over devices
        new_state, _ = fn(state, x, y, T.epoch_key(0, 1))
        assert all(l.sharding.is_fully_replicated for l in jax.tree.leaves(new_state))
        print("OK")
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=_env(8), capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0 and "OK" in out.stdout, out.stderr[-3000:]


def test_checkpoints_move_between_device_counts(runs, tmp_path):
    csv, one, eight, _ = runs
    # 8 -> 1 for inference: _params restores the 8-device checkpoint on this 1-device process
    assert len(_params(eight)) == len(_params(one))
    # 8 -> 1 and 1 -> 8 for training: copy each workdir and resume with a bigger epoch budget
    import shutil

    for src, devices in ((eight, 1), (one, 8)):
        dst = tmp_path / f"{src.name}-on-{devices}"
        shutil.copytree(src, dst)
        _run(_cmd(csv, dst, **{"train.epochs": "6"}), devices=devices)
        history = _history(dst)
        assert [h["epoch"] for h in history] == [1, 2, 3, 4, 5, 6]
        assert json.loads((dst / "summary.json").read_text())["resumed_from_epoch"] == 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_train_one_model_like_one_process(runs, tmp_path):
    csv, one, _, _ = runs
    workdir = tmp_path / "two"
    port = _free_port()
    procs = [
        subprocess.Popen(
            _cmd(
                csv,
                workdir,
                **{
                    "dist.coordinator_address": f"127.0.0.1:{port}",
                    "dist.num_processes": "2",
                    "dist.process_id": str(i),
                    "dist.timeout_seconds": "60",
                },
            ),
            cwd=ROOT,
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=240))
    finally:
        for p in procs:
            p.kill()
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
    assert "2 cpu device(s) over 2 process(es)" in outs[0][0] and "training rows sharded by rows" in outs[0][0]
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["n_processes"] == 2 and summary["n_devices"] == 2
    _assert_same_training(one, workdir, rtol=1e-4)


def test_unreachable_coordinator_fails_fast_and_clearly(tmp_path):
    csv = write_tiny_csv(tmp_path / "d.csv")
    port = _free_port()
    t = time.monotonic()
    out = subprocess.run(
        _cmd(
            csv,
            tmp_path / "run",
            **{
                "dist.coordinator_address": f"127.0.0.1:{port}",
                "dist.num_processes": "2",
                "dist.process_id": "1",
                "dist.timeout_seconds": "2",
            },
        ),
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1
    assert f"could not reach the coordinator at 127.0.0.1:{port} within 2 s" in out.stderr
    assert time.monotonic() - t < 30
    assert not (tmp_path / "run").exists()
