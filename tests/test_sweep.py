"""Sweeps: spec parsing, members equal single runs, masking, NaN members, resume, ensembles, 8 devices."""

import dataclasses
import json
import math
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mlp_jax import config as C
from mlp_jax import data as D
from mlp_jax import model as M
from mlp_jax import sweep as S
from mlp_jax import train as T
from tests.helpers import ROOT, tiny_config, write_regression_csv


def _sweep_config(tmp_path, csv, **overrides):
    items = {"train.epochs": "2", "train.patience": "0", "train.checkpoint_every": "1", **overrides}
    return tiny_config(tmp_path, csv, **items)


def _leaves(tree):
    return [np.asarray(a) for a in jax.tree.leaves(tree)]


# ----------------------------------------------------------------------------- parsing


def test_grid_is_the_typed_cartesian_product():
    cfg = C.apply_overrides(
        C.Config(),
        ["sweep.optim.learning_rate=1e-3,3e-3", "sweep.seed=0,1,2", "sweep.model.hidden_sizes=16,8/32"],
    )
    members = S.expand(cfg)
    assert len(members) == 2 * 3 * 2
    assert members[0].values == {"optim.learning_rate": 1e-3, "seed": 0, "model.hidden_sizes": (16, 8)}
    assert members[-1].config.model.hidden_sizes == (32,) and members[-1].config.seed == 2
    assert all(m.config.sweep == C.SweepConfig() for m in members)
    assert isinstance(members[0].values["seed"], int)
    assert C.from_json(C.to_json(cfg)) == cfg  # the sweep rides in the stored config
    groups = S.group_members(members)  # hidden sizes change shapes: one program per shape
    assert [len(g) for g in groups] == [6, 6]


@pytest.mark.parametrize(
    ("item", "match"),
    [
        ("sweep.optim.learnig_rate=1e-3", r"did you mean sweep\.optim\.learning_rate"),
        ("sweep.optim.learning_rate=", r"sweep\.optim\.learning_rate: empty value list"),
        ("sweep.optim.learning_rate=1e-3,,2e-3", r"empty item"),
        ("sweep.optim.learning_rate=1e-3,abc", r"sweep\.optim\.learning_rate: expected float, got 'abc'"),
        ("sweep.seed=0,1.5", r"sweep\.seed: expected int"),
        ("sweep.optim.learning_rate=0,1e-3", r"optim\.learning_rate: must be > 0"),
        ("sweep.optim.learning_rate=1e-2:1e-4", r"needs low < high"),
        ("sweep.optim.learning_rate=1e-4:1e-2", r"needs sweep\.samples"),
        ("sweep.optim.learning_rate=1e-3,1e-3", r"duplicate"),
        ("sweep.data.path=a.csv,b.csv", r"cannot be swept"),
        ("sweep.optim.name=adam,lion", r"not one of"),
    ],
)
def test_malformed_specs_are_named_errors(item, match):
    with pytest.raises(C.ConfigError, match=match):
        C.apply_overrides(C.Config(), [item])


def test_random_draws_are_seeded_and_within_ranges():
    items = ["sweep.samples=40", "sweep.optim.learning_rate=1e-5:1e-1", "sweep.model.dropout=0:0.5", "sweep.seed=0:3"]
    a = S.expand(C.apply_overrides(C.Config(), items))
    b = S.expand(C.apply_overrides(C.Config(), items))
    assert [m.values for m in a] == [m.values for m in b]
    c = S.expand(C.apply_overrides(C.Config(), [*items, "seed=1"]))
    assert [m.values for m in a] != [m.values for m in c]
    lrs = np.array([m.values["optim.learning_rate"] for m in a])
    assert lrs.min() >= 1e-5 and lrs.max() <= 1e-1
    assert (lrs < 1e-3).sum() >= 10  # log-uniform: half the draws below the geometric middle
    assert all(0 <= m.values["model.dropout"] <= 0.5 for m in a)
    assert {m.values["seed"] for m in a} <= {0, 1, 2, 3}


# ----------------------------------------------------------------------------- training


@pytest.mark.slow
def test_members_equal_single_runs(tmp_path, tiny_csv):
    cfg = _sweep_config(
        tmp_path,
        tiny_csv,
        **{
            "optim.name": "adam",
            "sweep.optim.learning_rate": "1e-3,1e-2",
            "sweep.model.dropout": "0,0.2",
            "sweep.optim.weight_decay": "0,1e-3",
            "sweep.seed": "0,1",
        },
    )
    ds = D.prepare(cfg.data, cfg.seed)
    result = S.run_sweep(cfg, ds)
    assert len(result.members) == 16 and len(result.groups) == 1
    for index in (0, 15):  # (1e-3, dropout 0, wd 0, seed 0), (1e-2, dropout 0.2, wd 1e-3, seed 1)
        member = result.members[index]
        single = T.fit(
            C.with_values(dataclasses.replace(cfg, sweep=C.SweepConfig()), member.values), ds, progress=False
        )
        _, best = result.params_of(index)
        for a, b in zip(_leaves(single.best_params), _leaves(best), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        for h1, h2 in zip(single.history, member.history, strict=True):
            assert h2["val_loss"] == pytest.approx(h1["val_loss"], rel=1e-5)
            assert h2["train_loss"] == pytest.approx(h1["train_loss"], rel=1e-5)


def test_frozen_members_keep_their_state(tiny_csv):
    cfg = C.apply_overrides(C.Config(), [f"data.path={tiny_csv}", "model.hidden_sizes=8", "sweep.seed=0,1,2"])
    ds = D.prepare(cfg.data, cfg.seed)
    members = S.expand(cfg)
    states = S.create_states(members, ["seed"], T.network_spec(members[0].config, ds), len(ds.y_train))
    before = jax.tree.map(np.asarray, states)
    keys = jax.vmap(lambda s: T.epoch_key(s, 1))(jnp.arange(3))
    epoch = S.make_sweep_epoch(32, len(ds.y_train))
    after, sums = epoch(states, jnp.array([True, False, True]), ds.x_train, ds.y_train, keys)
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after), strict=True):
        np.testing.assert_array_equal(a[1], np.asarray(b)[1])  # frozen: bitwise the same
    moved = [
        not np.array_equal(a[k], np.asarray(b)[k])
        for a, b in zip(jax.tree.leaves(before.params), jax.tree.leaves(after.params), strict=True)
        for k in (0, 2)
    ]
    assert all(moved)
    assert sums["loss_sum"].shape == (3,)


@pytest.mark.parametrize(("k", "devices", "active"), [(6, 1, [1, 1, 0, 1, 1, 1]), (4, 2, [1, 0, 1, 1])])
def test_members_stepped_in_chunks_equal_all_at_once(tiny_csv, k, devices, active):
    """CPU sweeps may step each device's block of members two at a time (3 turns of one block;
    2 blocks as on a 2-device mesh, 1 turn each): the same members, the same figures."""
    seeds = ",".join(map(str, range(k)))
    cfg = C.apply_overrides(C.Config(), [f"data.path={tiny_csv}", "model.hidden_sizes=8", f"sweep.seed={seeds}"])
    ds = D.prepare(cfg.data, cfg.seed)
    members = S.expand(cfg)
    keys = jax.vmap(lambda s: T.epoch_key(s, 1))(jnp.arange(k))
    mask = jnp.asarray(active, bool)
    outs = []
    for chunk in (None, 2):
        states = S.create_states(members, ["seed"], T.network_spec(members[0].config, ds), len(ds.y_train))
        epoch = S.make_sweep_epoch(32, len(ds.y_train), devices=devices, chunk=chunk)
        outs.append(jax.tree.map(np.asarray, epoch(states, mask, ds.x_train, ds.y_train, keys)))
    (whole, whole_sums), (chunked, chunked_sums) = outs
    for a, b in zip(jax.tree.leaves(whole), jax.tree.leaves(chunked), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    for name, v in whole_sums.items():
        np.testing.assert_allclose(v, chunked_sums[name], rtol=1e-5)
    assert np.asarray(chunked.step).tolist() == [int(a) * np.asarray(whole.step).max() for a in active]


def test_cpu_members_go_in_turns_only_when_a_step_is_wide():
    assert S.member_chunk(8, 256) == 2  # the baseline sweep, 8 members per CPU device: 2 x 256 rows a turn
    assert S.member_chunk(16, 128) == 4
    assert S.member_chunk(8, 88) is None and S.member_chunk(8, 24) is None  # small tables' k-fold members
    assert S.member_chunk(1, 256) is None and S.member_chunk(3, 256) is None
    assert S.member_chunk(7, 256) is None  # no divisor of 7 fits


@pytest.mark.slow
def test_non_finite_member_stops_and_others_finish(tmp_path, tiny_csv):
    cfg = _sweep_config(
        tmp_path, tiny_csv, **{"train.epochs": "3", "optim.name": "sgd", "sweep.optim.learning_rate": "0.05,1e6"}
    )
    ds = D.prepare(cfg.data, cfg.seed)
    result = S.run_sweep(cfg, ds)
    good, bad = result.members
    assert good.stopped == "budget" and good.epochs_run == 3 and math.isfinite(good.best_val_loss)
    assert bad.stopped == "non-finite" and bad.epochs_run < 3
    assert bad.history[-1]["val_loss"] is None or bad.history[-1]["train_loss"] is None
    _, best = result.params_of(1)
    assert all(np.isfinite(a).all() for a in _leaves(best))  # the last finite best (or the initial params)
    steps = T.steps_per_epoch(len(ds.y_train), cfg.train.batch_size)
    np.testing.assert_array_equal(np.asarray(result.groups[0].state.step), [3 * steps, bad.epochs_run * steps])
    assert [m.index for m in S.top_k(result, 5)] == ([0, 1] if math.isfinite(bad.best_val_loss) else [0])


@pytest.mark.slow
def test_patience_is_per_member(tmp_path, tiny_csv):
    cfg = _sweep_config(
        tmp_path, tiny_csv, **{"train.epochs": "30", "optim.learning_rate": "0.05", "sweep.train.patience": "1,0"}
    )
    ds = D.prepare(cfg.data, cfg.seed)
    result = S.run_sweep(cfg, ds)
    impatient, patient = result.members
    assert impatient.stopped == "patience" and impatient.epochs_run < 30
    assert impatient.epochs_run - impatient.best_epoch == 1
    assert patient.stopped == "budget" and patient.epochs_run == 30
    steps = T.steps_per_epoch(len(ds.y_train), cfg.train.batch_size)
    assert int(result.groups[0].state.step[0]) == impatient.epochs_run * steps  # frozen after it stopped


@pytest.mark.slow
def test_resume_after_a_crash_is_bitwise(tmp_path, tiny_csv):
    overrides = {
        "train.epochs": "5",
        "optim.learning_rate": "0.02",
        "sweep.train.patience": "1,3",
        "sweep.seed": "0,1",
        "sweep.model.hidden_sizes": "8/16,8",
    }
    ds = D.prepare(C.apply_overrides(C.Config(), [f"data.path={tiny_csv}"]).data, 0)
    straight = S.run_sweep(_sweep_config(tmp_path / "a", tiny_csv, **overrides), ds, str(tmp_path / "a" / "w"))

    class Crash(Exception):
        pass

    def crash_at_epoch_3_of_group_0(report: S.EpochReport) -> None:
        if report.group == 0 and report.epoch == 3:
            raise Crash

    cfg = _sweep_config(tmp_path / "b", tiny_csv, **overrides)
    with pytest.raises(Crash):
        S.run_sweep(cfg, ds, str(tmp_path / "b" / "w"), on_epoch=crash_at_epoch_3_of_group_0)
    resumed = S.run_sweep(cfg, ds, str(tmp_path / "b" / "w"))
    assert straight.table() == resumed.table()
    assert [m.history for m in straight.members] == [m.history for m in resumed.members]
    for g1, g2 in zip(straight.groups, resumed.groups, strict=True):
        for a, b in zip(
            _leaves((g1.state.arrays(), g1.best_params)), _leaves((g2.state.arrays(), g2.best_params)), strict=True
        ):
            np.testing.assert_array_equal(a, b)
    again = S.run_sweep(cfg, ds, str(tmp_path / "b" / "w"))  # finished: restores, trains nothing
    assert again.table() == straight.table()
    changed = dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, learning_rate=0.03))
    with pytest.raises(S.SweepError, match=r"optim\.learning_rate"):
        S.run_sweep(changed, ds, str(tmp_path / "b" / "w"))


@pytest.mark.slow
def test_ensemble_mean_std_and_top_k(tmp_path, tiny_csv):
    cfg = _sweep_config(tmp_path, tiny_csv, **{"sweep.seed": "0,1,2"})
    ds = D.prepare(cfg.data, cfg.seed)
    result = S.run_sweep(cfg, ds)
    g = result.groups[0]
    x = ds.x_test[:50]
    mean, std = S.ensemble_predict(g.graphdef, g.best_params, x, [0, 2])
    p0 = np.asarray(M.probabilities_fn(g.graphdef)(result.params_of(0)[1], x))
    p2 = np.asarray(M.probabilities_fn(g.graphdef)(result.params_of(2)[1], x))
    assert mean.shape == std.shape == (50, ds.n_classes)
    np.testing.assert_allclose(mean, (p0 + p2) / 2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(std, np.abs(p0 - p2) / 2, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(mean.sum(axis=1), 1.0, rtol=1e-5)
    _, same_std = S.ensemble_predict(g.graphdef, g.best_params, x, [1, 1])
    np.testing.assert_allclose(same_std, 0.0, atol=1e-7)
    np.testing.assert_allclose(result.predict(x, [0, 2])[0], mean, rtol=1e-6)
    ranked = S.top_k(result, 2)
    assert len(ranked) == 2 and ranked[0].best_val_loss <= ranked[1].best_val_loss
    assert ranked[0].best_val_loss == min(m.best_val_loss for m in result.members)


# ----------------------------------------------------------------------------- devices

_EIGHT_DEVICES = textwrap.dedent(
    """
    import json, sys
    import jax
    from mlp_jax import config as C, data as D, sweep as S
    cfg = C.apply_overrides(C.Config(), sys.argv[1:])
    ds = D.prepare(cfg.data, cfg.seed)
    r = S.run_sweep(cfg, ds)
    print(json.dumps({"n_devices": r.n_devices, "devices": len(jax.devices()), "table": r.table(),
                      "histories": [m.history for m in r.members]}))
    """
)


@pytest.mark.slow
def test_members_sharded_over_eight_devices_match_one(tmp_path, tiny_csv):
    items = [
        f"data.path={tiny_csv}",
        "model.hidden_sizes=16,8",
        "train.epochs=2",
        "train.batch_size=32",
        "train.patience=0",
        "sweep.optim.learning_rate=1e-3,1e-2",
        "sweep.seed=0,1,2,3,4,5",
    ]
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    out = subprocess.run(
        [sys.executable, "-c", _EIGHT_DEVICES, *items], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    eight = json.loads(out.stdout.strip().splitlines()[-1])
    assert eight["devices"] == 8 and eight["n_devices"] == 6  # 12 members: 2 per device on 6, no padding
    cfg = C.apply_overrides(C.Config(), items)
    one = S.run_sweep(cfg, D.prepare(cfg.data, cfg.seed))
    for h8, h1 in zip(eight["histories"], [m.history for m in one.members], strict=True):
        np.testing.assert_allclose([h["val_loss"] for h in h8], [h["val_loss"] for h in h1], rtol=1e-5)
    assert [r["stopped"] for r in eight["table"]] == [m.stopped for m in one.members]


def test_use_cpu_cores_makes_a_cpu_device_per_core_unless_the_user_chose():
    def devices(code, **env):
        base = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_NUM_CPU_DEVICES")}
        out = subprocess.run(
            [sys.executable, "-c", code],
            cwd=ROOT,
            env={**base, "JAX_PLATFORMS": "cpu", **env},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr[-3000:]
        return out.stdout.split()

    # devices made, devices visible, devices of a single model's data mesh (train.num_devices=0)
    ask = (
        "from mlp_jax import distributed as d; n = d.use_cpu_cores(); import jax; "
        "print(n, len(jax.devices()), d.make_mesh().devices.size)"
    )
    from mlp_jax.distributed import usable_cores

    cores = str(usable_cores())  # the affinity, capped by a container quota
    assert devices(ask) == [cores, cores, "1"]  # a single run after a sweep keeps one device
    assert devices(ask, XLA_FLAGS="--xla_force_host_platform_device_count=3") == ["3", "3", "3"]  # the user's count
    assert devices(ask, JAX_NUM_CPU_DEVICES="5") == ["5", "5", "5"]
    # too late once JAX has started: no error, nothing changed
    late = "import jax; jax.devices(); from mlp_jax import distributed as d; print(d.use_cpu_cores())"
    assert devices(late) == ["1"]


def _cgroups(tmp_path, proc_lines, files):
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text + "\n")
    proc = tmp_path / "proc_self_cgroup"
    proc.write_text("\n".join(proc_lines) + "\n")
    return tmp_path, proc


def test_a_containers_cgroup_quota_caps_the_cores_and_memory(tmp_path, monkeypatch):
    from mlp_jax import distributed as D

    # cgroup v2 (docker --cpus 1.5 --memory 2g): the process's cgroup, or a tighter ancestor, limits it
    root, proc = _cgroups(
        tmp_path / "v2",
        ["0::/docker/abc"],
        {
            "docker/abc/cpu.max": "150000 100000",
            "docker/abc/memory.max": str(2 << 30),
            "docker/cpu.max": "max 100000",
            "docker/memory.max": str(1 << 30),
        },
    )
    assert D.cgroup_cpu_quota(root, proc) == 1.5
    assert D.cgroup_memory_limit(root, proc) == 1 << 30
    # cgroup v1 (this project's CI box has one): quota/period; -1 and v1's ~2**63 mean unlimited
    root, proc = _cgroups(
        tmp_path / "v1",
        ["4:memory:/job", "3:cpu,cpuacct:/job", "0::/"],
        {
            "cpu,cpuacct/job/cpu.cfs_quota_us": "300000",
            "cpu,cpuacct/job/cpu.cfs_period_us": "100000",
            "cpu,cpuacct/cpu.cfs_quota_us": "-1",
            "cpu,cpuacct/cpu.cfs_period_us": "100000",
            "memory/job/memory.limit_in_bytes": "9223372036854771712",
        },
    )
    assert D.cgroup_cpu_quota(root, proc) == 3.0
    assert D.cgroup_memory_limit(root, proc) is None
    # a container without a cgroup namespace: /proc/self/cgroup names the host's path, which is not
    # under the container's mounts; their roots are the container's own cgroups (v1 and v2)
    root, proc = _cgroups(
        tmp_path / "docker-v1",
        ["4:cpu,cpuacct:/docker/abc123", "12:memory:/docker/abc123"],
        {
            "cpu,cpuacct/cpu.cfs_quota_us": "200000",
            "cpu,cpuacct/cpu.cfs_period_us": "100000",
            "memory/memory.limit_in_bytes": str(1 << 30),
        },
    )
    assert D.cgroup_cpu_quota(root, proc) == 2.0 and D.cgroup_memory_limit(root, proc) == 1 << 30
    root, proc = _cgroups(
        tmp_path / "docker-v2",
        ["0::/system.slice/docker-abc.scope"],
        {"cpu.max": "150000 100000", "memory.max": str(512 << 20)},
    )
    assert D.cgroup_cpu_quota(root, proc) == 1.5 and D.cgroup_memory_limit(root, proc) == 512 << 20
    # no limits, malformed files, a missing /proc entry: no cap, no error
    root, proc = _cgroups(tmp_path / "none", ["0::/"], {"cpu.max": "max 100000", "memory.max": "max"})
    assert D.cgroup_cpu_quota(root, proc) is None and D.cgroup_memory_limit(root, proc) is None
    root, proc = _cgroups(tmp_path / "bad", ["0::/"], {"cpu.max": "lots", "memory.max": "-5"})
    assert D.cgroup_cpu_quota(root, proc) is None and D.cgroup_memory_limit(root, proc) is None
    assert D.cgroup_cpu_quota(root, tmp_path / "missing") is None

    # usable_cores: the affinity, capped by the quota rounded down, never below 1
    monkeypatch.setattr(D.os, "sched_getaffinity", lambda pid: set(range(64)))
    for quota, cores in ((1.5, 1), (0.5, 1), (8.0, 8), (None, 64), (100.0, 64)):
        monkeypatch.setattr(D, "cgroup_cpu_quota", lambda q=quota: q)
        assert D.usable_cores() == cores
    monkeypatch.setattr(D, "cgroup_memory_limit", lambda: 1 << 30)
    assert D.usable_memory_bytes() == 1 << 30


def test_cpu_devices_are_capped_by_the_copies_of_the_rows_that_memory_holds(monkeypatch):
    gib = 1 << 30
    assert S.cpu_copies_that_fit(1 * gib, memory_bytes=64 * gib) == 16  # a quarter of 64 GiB
    assert S.cpu_copies_that_fit(10 * gib, memory_bytes=64 * gib) == 1
    assert S.cpu_copies_that_fit(100 * gib, memory_bytes=64 * gib) == 1  # never 0
    assert S.cpu_copies_that_fit(6_000_000) > 100  # the baseline's rows on any machine that runs the suite
    monkeypatch.setattr(S.jax, "devices", lambda *a: list(range(8)))  # 8 devices, as on a big CPU host
    assert S._member_devices(16, 0) == (8, 16)
    assert S._member_devices(16, 0, auto_cap=3) == (3, 18)  # 6 per device, 2 frozen padding members
    assert S._member_devices(16, 4, auto_cap=1) == (4, 16)  # a count the user asked for is kept


# ----------------------------------------------------------------------------- ensemble membership


def _member(index, loss, group=0):
    return S.MemberResult(index, group, {}, loss, 1, 1, "patience", [])


def test_members_no_better_than_a_trivial_model_stay_out_of_the_ensemble():
    # member 3 "learned" nothing (a huge but finite loss), member 4 is NaN, member 5 is another program
    losses = [0.30, 0.10, 0.20, 1e6, math.inf, 0.05]
    result = S.SweepResult([_member(i, v, group=1 if i == 5 else 0) for i, v in enumerate(losses)], [])
    assert S.ensemble_members(result, 4) == [5]  # the best member's program holds only itself
    result.members[5] = _member(5, 0.05, group=0)
    assert S.ensemble_members(result, 5) == [5, 1, 2, 0, 3]  # no ceiling: the top-5 finite members
    assert S.ensemble_members(result, 5, ceiling=0.69) == [5, 1, 2, 0]
    assert S.ensemble_members(result, 5, ceiling=0.15) == [5, 1]
    # the best member always stays (it is the best there is), even above the ceiling
    assert S.ensemble_members(result, 3, ceiling=0.01) == [5]
    assert S.ensemble_members(result, 1, ceiling=0.69) == [5] and S.ensemble_members(result, 0) == []


def test_trivial_val_loss_is_the_prior_or_the_mean_scored_like_a_member(tmp_path, tiny_csv):
    from sklearn.metrics import log_loss

    cfg = tiny_config(tmp_path, tiny_csv)
    ds = D.prepare(cfg.data, cfg.seed)
    prior = np.bincount(ds.y_train, minlength=ds.n_classes) / len(ds.y_train)
    expected = log_loss(ds.y_val, np.tile(prior, (len(ds.y_val), 1)), labels=range(ds.n_classes))
    assert S.trivial_val_loss(cfg, ds) == pytest.approx(expected, rel=1e-9)

    csv = write_regression_csv(tmp_path / "reg.csv")
    for loss, delta in (("mse", 1.0), ("huber", 0.5)):
        rcfg = tiny_config(
            tmp_path,
            csv,
            **{"data.target": "y1,y2", "data.task": "regression", "train.loss": loss, "train.huber_delta": str(delta)},
        )
        rds = D.prepare(rcfg.data, rcfg.seed)
        # a member that outputs the training mean for every row, scored by the training loss itself
        state = T.create_state(rcfg, T.network_spec(rcfg, rds), len(rds.y_train), "regression")
        mean = np.broadcast_to(rds.y_train.mean(axis=0), rds.y_val.shape)
        member = float(jnp.mean(T.row_losses(state, jnp.asarray(mean), jnp.asarray(rds.y_val))))
        assert S.trivial_val_loss(rcfg, rds) == pytest.approx(member, rel=1e-5)


# ----------------------------------------------------------------------------- k-fold members


def test_kfold_rows_cover_every_row_once_stratified_and_seeded():
    y = np.repeat(np.arange(3), [40, 25, 15]).astype(np.int32)
    rows = S.kfold_rows(y, 5, 0, "classification")
    assert rows.k == 5 and rows.fold.shape == (80,)
    for k in range(5):  # stratified: every fold holds each class in proportion
        assert np.bincount(y[rows.fold == k], minlength=3).tolist() == [8, 5, 3]
    assert np.array_equal(S.kfold_rows(y, 5, 0, "classification").fold, rows.fold)
    assert not np.array_equal(S.kfold_rows(y, 5, 1, "classification").fold, rows.fold)
    train_rows, counts = rows.train_rows(8)  # padded to 8 members (devices): the extra copy member 0
    assert train_rows.shape == (8, 64) and counts.tolist() == [64] * 8
    assert set(train_rows[2]) == set(np.flatnonzero(rows.fold != 2)) and rows.min_train_rows == 64
    rare = np.array([0] * 30 + [1] * 3, np.int32)  # a class rarer than the folds: plain k folds
    assert sorted(np.bincount(S.kfold_rows(rare, 4, 0, "classification").fold)) == [8, 8, 8, 9]
    with pytest.raises(C.ConfigError, match="too few for 8 folds"):
        S.kfold_rows(np.zeros(10, np.int32), 8, 0, "classification")


def test_kfold_members_never_train_on_their_own_fold(tiny_csv):
    """Poison fold 0's rows with NaN: member 0, which holds that fold out, trains on finite rows only."""
    cfg = C.apply_overrides(C.Config(), [f"data.path={tiny_csv}", "model.hidden_sizes=8", "sweep.seed=0,1,2"])
    ds = D.prepare(cfg.data, cfg.seed)
    pooled, rows = S.kfold_dataset(ds, 3, 0)
    assert len(pooled.y_train) == len(ds.y_train) + len(ds.y_val) and len(pooled.y_val) == 0
    x = pooled.x_train.copy()
    x[rows.fold == 0] = np.nan
    members = S.expand(cfg)
    states = S.create_states(members, ["seed"], T.network_spec(members[0].config, ds), rows.min_train_rows)
    keys = jax.vmap(lambda s: T.epoch_key(s, 1))(jnp.arange(3))
    epoch = S.make_sweep_epoch(32, rows.min_train_rows, kfold=True)
    own, counts = rows.train_rows(3)
    after, sums = epoch(states, jnp.ones(3, bool), x, pooled.y_train, keys, own, counts)
    loss = np.asarray(sums["loss_sum"])
    assert np.isfinite(loss[0]) and np.isnan(loss[1:]).all()
    assert all(np.isfinite(np.asarray(a)[0]).all() for a in jax.tree.leaves(after.params))
    assert float(sums["count"][0]) == (rows.min_train_rows // 32) * 32  # full batches of its own rows


@pytest.mark.slow
def test_kfold_members_stop_on_their_fold_and_report_out_of_fold_scores(tmp_path, tiny_csv):
    """Each member's validation loss is its own fold's; the runner reports out-of-fold scores and
    serves the k members as one ensemble; a resume without k-fold members is refused by name."""
    from mlp_jax import runner
    from mlp_jax.predictor import Predictor

    cfg = _sweep_config(tmp_path, tiny_csv, **{"train.epochs": "1", "sweep.seed": "0,1,2"})
    ds = D.prepare(cfg.data, cfg.seed)
    pooled, rows = S.kfold_dataset(ds, 3, 7)
    result = S.run_sweep(cfg, pooled, member_rows=rows)
    final = result.groups[0].state
    for k, member in enumerate(result.members):
        params = jax.tree.map(lambda a, k=k: a[k], final.params)
        held = rows.fold == k
        probs = np.asarray(M.apply(final.graphdef, params, jnp.asarray(pooled.x_train[held])))
        expected = S.log_loss(pooled.y_train[held], np.asarray(jax.nn.softmax(probs)))
        assert member.history[0]["val_loss"] == pytest.approx(expected, rel=1e-4)
    oof = S.out_of_fold(result, [0, 1, 2], pooled.x_train, rows)
    for k in range(3):
        held = rows.fold == k
        np.testing.assert_allclose(oof[held], result.predict(pooled.x_train[held], [k])[0], rtol=1e-6)

    run_cfg = tiny_config(tmp_path, tiny_csv, **{"train.members": "3"})  # k-fold members: the default
    summary = runner.run(run_cfg, progress=False)
    assert Predictor.load(str(tmp_path / "run")).members == 3 and summary["validation"] == "out-of-fold"
    assert np.isfinite(summary["best_val_loss"]) and np.isfinite(summary["test_loss"])
    with pytest.raises(C.ConfigError, match=r"train\.kfold_members \(True vs False\)"):
        runner.run(
            tiny_config(tmp_path, tiny_csv, **{"train.members": "3", "train.kfold_members": "false"}), progress=False
        )


def test_too_few_rows_for_the_folds_fall_back_to_shared_rows(tmp_path):
    from mlp_jax import runner
    from tests.helpers import write_tiny_csv

    csv = write_tiny_csv(tmp_path / "small.csv", n=18)
    cfg = tiny_config(tmp_path, csv, **{"train.members": "8", "train.batch_size": "4", "train.epochs": "2"})
    summary = runner.run(cfg, progress=False)
    assert np.isfinite(summary["test_loss"]) and summary["validation"] == "held-out" and summary["members"] == 8


def test_a_batch_larger_than_a_kfold_members_rows_names_the_folds(tmp_path):
    """70 training rows take a batch of 64, but a k-fold member trains on ~2/3 of the 85 pooled rows:
    the refusal says why the rows are fewer than the split shows, and the way out."""
    from tests.helpers import write_tiny_csv

    csv = write_tiny_csv(tmp_path / "small.csv", n=100)
    cfg = tiny_config(tmp_path, csv, **{"train.batch_size": "64"})
    ds = D.prepare(cfg.data, cfg.seed, verbose=False)
    assert len(ds.y_train) >= 64
    pooled, rows = S.kfold_dataset(ds, 3, 0)
    with pytest.raises(C.ConfigError, match=r"smallest k-fold member .*train\.kfold_members=false"):
        S.check(S.seeds_config(cfg, 3), pooled, rows)
    S.check(S.seeds_config(cfg, 3), ds)  # shared rows: the batch fits
