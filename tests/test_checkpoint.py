import dataclasses
import os
import signal
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from mlp_jax import artifact as A
from mlp_jax import config as C
from mlp_jax import data as D
from mlp_jax import train as T
from tests.helpers import ROOT, sigkill_when, tiny_config, write_tiny_csv


def _arrays(workdir: Path, step: int | None = None) -> list[np.ndarray]:
    mngr = A.manager(Path(workdir).resolve())
    step = step or mngr.latest_step()
    tree = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]
    mngr.close()
    return [np.asarray(a) for a in jax.tree.leaves(tree)]


def test_round_trip_resume_and_inference_restore(tmp_path, tiny_csv):
    cfg = tiny_config(tmp_path, tiny_csv)
    ds = D.prepare(cfg.data, cfg.seed)
    result = T.fit(cfg, ds, workdir=cfg.resolved_workdir, progress=False)
    assert A.step_folders(Path(cfg.resolved_workdir)) == [2, 4]  # every 2 epochs, latest 2 kept
    ic = A.load(cfg.resolved_workdir)
    assert ic.step == 4
    for a, b in zip(jax.tree.leaves(ic.params), jax.tree.leaves(result.best_params), strict=True):
        np.testing.assert_array_equal(a, b)
    assert ic.meta.input_columns == ds.feature_names
    assert ic.meta.classes == (0, 1)
    assert ic.meta.preprocessing == ds.preprocessor.to_dict()
    assert ic.meta.metrics["epoch"] == ic.meta.early_stopping["best_epoch"] == 4
    # metrics describe the served parameters: the best epoch's row (a sweep member's artifact holds
    # later epochs too), a deep ensemble's own row, else the last
    rows = tuple({"epoch": e, "val_loss": 1.0 / e} for e in (1, 2, 3))
    later = dataclasses.replace(ic.meta, history=rows, early_stopping={"best_epoch": 2})
    assert later.metrics == {"epoch": 2, "val_loss": 0.5}
    ensemble = dataclasses.replace(later, history=(*rows, {"epoch": 2, "ensemble_members": [0, 1], "val_loss": 0.4}))
    assert ensemble.metrics["val_loss"] == 0.4
    assert dataclasses.replace(later, early_stopping={"best_epoch": 0}).metrics["epoch"] == 3
    assert ic.meta.experiment == C.resolve_auto(cfg, len(ds.y_train))  # stored with "auto" resolved
    assert A.ArtifactMeta.from_json(ic.meta.to_json()) == ic.meta  # the typed format round-trips
    # a step folder works too, and so does restoring onto a named device
    assert A.load(Path(cfg.resolved_workdir) / "2", device=jax.devices()[0]).step == 2
    # a second run on the same workdir with a larger budget resumes, not restarts
    more = tiny_config(tmp_path, tiny_csv, **{"train.epochs": "6"})
    again = T.fit(more, ds, workdir=more.resolved_workdir, progress=False)
    assert again.resumed_from == 4
    assert [h["epoch"] for h in again.history] == [1, 2, 3, 4, 5, 6]


def test_resume_with_a_different_config_or_data_is_refused(tmp_path, tiny_csv):
    cfg = tiny_config(tmp_path, tiny_csv)
    ds = D.prepare(cfg.data, cfg.seed)
    T.fit(cfg, ds, workdir=cfg.resolved_workdir, progress=False)
    changed = tiny_config(tmp_path, tiny_csv, **{"optim.learning_rate": "0.01", "model.hidden_sizes": "32"})
    with pytest.raises(A.CheckpointError) as info:
        T.fit(changed, ds, workdir=cfg.resolved_workdir, progress=False)
    msg = str(info.value)
    assert "model.hidden_sizes" in msg and "optim.learning_rate" in msg and "0.001" in msg
    other_csv = write_tiny_csv(tmp_path / "other.csv", seed=9)
    with pytest.raises(A.CheckpointError, match="the data changed"):
        T.fit(
            cfg,
            D.prepare(cfg.data.__class__(path=str(other_csv)), cfg.seed),
            workdir=cfg.resolved_workdir,
            progress=False,
        )


def test_bad_checkpoint_paths_are_named(tmp_path):
    with pytest.raises(A.CheckpointError, match="does not exist"):
        A.load(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(A.CheckpointError, match="not a checkpoint"):
        A.load(tmp_path / "empty")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(A.CheckpointError, match="is a file"):
        A.load(tmp_path / "file.txt")


# ----------------------------------------------------------------------------- kill -9 and resume


def _command(csv: Path, workdir: Path) -> list[str]:
    overrides = {
        "data.path": str(csv),
        "workdir": str(workdir),
        "model.hidden_sizes": "64,32",
        "train.epochs": "10",
        "train.batch_size": "64",
        "train.patience": "0",
        "train.checkpoint_every": "1",
        "train.progress": "false",
        "train.compare_sklearn": "false",
        "tracking.enabled": "false",
    }
    return [sys.executable, "-m", "experiments.baseline", *(f"{k}={v}" for k, v in overrides.items())]


def _run(cmd: list[str]) -> None:
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, timeout=180, env=_env())


def _env() -> dict[str, str]:
    return {**os.environ, "JAX_PLATFORMS": "cpu"}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ref")
    csv = write_tiny_csv(tmp / "data.csv", n=8000)
    _run(_command(csv, tmp / "ref"))
    return csv, tmp / "ref"


def _summary_numbers(workdir: Path) -> dict:
    import json

    s = json.loads((workdir / "summary.json").read_text())
    return {k: s[k] for k in ("test_accuracy", "test_loss", "best_epoch", "epochs_run", "best_val_loss")}


@pytest.mark.slow
@pytest.mark.parametrize("moment", ["after_step_3", "during_a_save"])
def test_sigkill_then_rerun_is_bitwise_equal_to_an_uninterrupted_run(tmp_path, reference, moment):
    csv, ref = reference
    workdir = tmp_path / "killed"
    cmd = _command(csv, workdir)

    def ready() -> bool:
        names = [p.name for p in workdir.iterdir()] if workdir.exists() else []
        if moment == "after_step_3":
            return "3" in names
        return any("tmp" in n for n in names) and "2" in names  # during_a_save

    code = sigkill_when(cmd, _env(), ready, timeout=120)
    assert code == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (workdir / "summary.json").exists()
    _run(cmd)  # the same command again resumes and finishes
    assert _summary_numbers(workdir) == _summary_numbers(ref)
    for a, b in zip(_arrays(workdir), _arrays(ref), strict=True):
        np.testing.assert_array_equal(a, b)


def test_the_best_parameters_restore_from_the_network_alone(tmp_path, tiny_csv):
    """Inference needs no optimiser: the best_params item restores into model.create's template."""
    cfg = tiny_config(tmp_path, tiny_csv, **{"optim.name": "sgd"})  # an optimiser state unlike Adam's
    T.fit(cfg, D.prepare(cfg.data, cfg.seed), workdir=cfg.resolved_workdir, progress=False)
    meta = A.read_meta_at(cfg.resolved_workdir)
    assert meta.format == A.FORMAT
    _, abstract = A.network_template(meta.network)
    loaded = A.load(cfg.resolved_workdir)
    assert jax.tree.structure(loaded.params) == jax.tree.structure(abstract)


FORMAT_1 = ROOT / "tests" / "data" / "format1" / "2"


def test_a_format_1_checkpoint_still_serves_with_the_same_numbers():
    """A step folder written by mlp-jax before the artifact module (format 1) loads for serving."""
    import json

    from mlp_jax.predictor import Predictor

    expected = json.loads((FORMAT_1.parent / "expected.json").read_text())
    loaded = A.load(FORMAT_1)
    assert loaded.meta.format == 1 and loaded.meta.input_columns == tuple(expected["columns"])
    predictor = Predictor.load(FORMAT_1, buckets=(32,))
    got = predictor.predict_proba(np.asarray(expected["rows"], np.float32))
    np.testing.assert_allclose(got, np.asarray(expected["proba"]), rtol=1e-6, atol=1e-7)


def test_resuming_a_format_1_workdir_is_refused_with_what_to_do(tmp_path, tiny_csv):
    import shutil

    shutil.copytree(FORMAT_1, tmp_path / "old" / "2")
    cfg = tiny_config(tmp_path, tiny_csv, workdir=str(tmp_path / "old"))
    with pytest.raises(A.CheckpointError, match=r"artifact format 1.*can still be served.*new workdir"):
        T.fit(cfg, D.prepare(cfg.data, cfg.seed), workdir=cfg.resolved_workdir, progress=False)


@pytest.mark.parametrize(
    "meta, message",
    [
        ({"format": 99}, r"format 99 is not readable"),
        ({"format": 2, "config": {}}, r"malformed model artifact metadata \(format 2\)"),
        ("[1, 2]", "not a JSON object"),
        ("{", "not JSON"),
    ],
)
def test_unreadable_metadata_names_the_format(meta, message):
    import json

    text = meta if isinstance(meta, str) else json.dumps(meta)
    with pytest.raises(A.CheckpointError, match=message):
        A.ArtifactMeta.from_json(text)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d.update(classes=[0, 1, 2]), "classes lists 3 labels but the network has 2 outputs"),
        (lambda d: d.update(classes=[1, 1]), "classes repeats a label"),
        (lambda d: d.update(task="regression"), "targets lists 0 columns but the network has 2 outputs"),
        (lambda d: d.update(task="ranking"), "task must be 'classification' or 'regression'"),
        (lambda d: d["preprocessing"]["columns"][0].update(scale=float("nan")), "must be finite numbers"),
    ],
    ids=["classes", "repeated-class", "task", "unknown-task", "nan-scale"],
)
def test_metadata_that_disagrees_with_the_network_is_refused(trained_workdir, tmp_path, edit, message):
    """A hand-edited metadata file: refused at load with the field named (it served 3 classes from 2
    outputs with 200, or failed later with a KeyError traceback)."""
    import json
    import shutil

    from mlp_jax.predictor import Predictor

    copy = tmp_path / "run"
    shutil.copytree(trained_workdir, copy)
    step = max(int(p.name) for p in copy.iterdir() if p.name.isdigit())
    path = copy / str(step) / "meta" / "metadata"
    meta = json.loads(path.read_text())
    edit(meta)
    path.write_text(json.dumps(meta))
    with pytest.raises(A.CheckpointError, match=message):
        Predictor.load(copy / str(step))


def test_regression_target_stats_are_checked():
    import json

    meta = {
        "format": 2,
        "config": {},
        "input_columns": ["x"],
        "preprocessing": {},
        "data": {"source": "s", "digest": "d", "train": 1, "val": 1, "test": 1},
    }
    net = {"in_features": 1, "n_outputs": 1, "hidden_sizes": [4], "activation": "relu", "dropout": 0.0}
    base = {**meta, "network": net, "task": "regression", "targets": ["y"]}
    assert A.ArtifactMeta.from_json(json.dumps({**base, "target_stats": {"mean": [1.0], "scale": [2.0]}})).targets == (
        "y",
    )
    for stats, message in [
        ({"mean": [1.0]}, r"target_stats.scale must list 1 numbers"),
        ({"mean": [1.0], "scale": [0.0]}, r"target_stats.scale must be positive"),
        ({"mean": [1.0, 2.0], "scale": [1.0]}, r"target_stats.mean must list 1 numbers"),
    ]:
        with pytest.raises(A.CheckpointError, match=message):
            A.ArtifactMeta.from_json(json.dumps({**base, "target_stats": stats}))
    text = json.dumps({**base, "target_stats": {"mean": [float("nan")], "scale": [1.0]}})
    with pytest.raises(A.CheckpointError, match="not a finite number"):
        A.ArtifactMeta.from_json(text)


def _truncate_arrays(step_dir: Path) -> int:
    """Truncates every array chunk file of a step (as `truncate -s 100 <step>/state/d/*` does)."""
    files = [f for f in step_dir.rglob("*") if f.is_file() and f.parent.name == "d"]
    for f in files:
        with open(f, "r+b") as fh:
            fh.truncate(min(100, f.stat().st_size // 2))
    return len(files)


@pytest.mark.slow
def test_a_damaged_newest_step_resumes_from_the_newest_intact_one(tmp_path, tiny_csv, capsys):
    cfg = tiny_config(tmp_path, tiny_csv, **{"train.epochs": "4", "train.checkpoint_every": "2"})
    ds = D.prepare(cfg.data, cfg.seed, verbose=False)
    T.fit(cfg, ds, workdir=cfg.resolved_workdir, progress=False)
    assert _truncate_arrays(Path(cfg.resolved_workdir) / "4") > 0
    more = tiny_config(tmp_path, tiny_csv, **{"train.epochs": "5", "train.checkpoint_every": "2"})
    again = T.fit(more, ds, workdir=more.resolved_workdir, progress=False)
    assert again.resumed_from == 2  # the damaged epoch-4 step was skipped, and said
    assert "is damaged" in capsys.readouterr().out
    assert (Path(cfg.resolved_workdir) / "damaged-4").is_dir()  # set aside, not deleted
    # serving a workdir uses the newest intact step and says which; a damaged step folder is one clear error
    loaded = A.load(cfg.resolved_workdir)
    assert loaded.step in (2, 5)
    _truncate_arrays(Path(cfg.resolved_workdir) / str(loaded.step))
    with pytest.raises(A.CheckpointError, match=r"checkpoint step .* is damaged or unreadable"):
        A.load(Path(cfg.resolved_workdir) / str(loaded.step))


@pytest.mark.slow
def test_every_step_damaged_is_one_clear_error(tmp_path, tiny_csv):
    cfg = tiny_config(tmp_path, tiny_csv, **{"train.epochs": "2", "train.checkpoint_every": "1"})
    ds = D.prepare(cfg.data, cfg.seed, verbose=False)
    T.fit(cfg, ds, workdir=cfg.resolved_workdir, progress=False)
    for step in A.step_folders(Path(cfg.resolved_workdir)):
        _truncate_arrays(Path(cfg.resolved_workdir) / str(step))
    with pytest.raises(A.CheckpointError, match="no intact checkpoint step"):
        A.load(cfg.resolved_workdir)
    with pytest.raises(A.CheckpointError, match="no intact checkpoint step to resume"):
        T.fit(cfg, ds, workdir=cfg.resolved_workdir, progress=False)


@pytest.mark.slow
def test_serving_a_damaged_step_fails_with_one_clear_line(tmp_path, tiny_csv):
    """No tracebacks (Orbax's late 'Event loop is closed' callbacks included): one line naming the step."""
    cfg = tiny_config(tmp_path, tiny_csv, **{"train.epochs": "2", "train.checkpoint_every": "2"})
    T.fit(cfg, D.prepare(cfg.data, cfg.seed, verbose=False), workdir=cfg.resolved_workdir, progress=False)
    step = Path(cfg.resolved_workdir) / "2"
    _truncate_arrays(step)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}
    for model in (step, Path(cfg.resolved_workdir)):
        out = subprocess.run(
            [sys.executable, "-m", "mlp_jax.serve", "--model", str(model), "--port", "0"],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
            cwd=tmp_path,
        )
        assert out.returncode == 1
        assert "Traceback" not in out.stderr and "Event loop is closed" not in out.stderr, out.stderr[-2000:]
        (line,) = [x for x in out.stderr.splitlines() if x.strip()]
        assert line.startswith("error: cannot serve") and "/2 is damaged or unreadable" in line


def test_rerunning_a_finished_run_trains_nothing_and_says_so(tmp_path, tiny_csv, capsys):
    from mlp_jax import runner

    cfg = tiny_config(tmp_path, tiny_csv, **{"train.epochs": "2"})
    first = runner.run(cfg, progress=False)
    again = runner.run(cfg, progress=False)
    assert again["train_samples_per_second"] == 0 and again["test_loss"] == first["test_loss"]
    capsys.readouterr()
    runner.print_summary(again)
    out = capsys.readouterr().out
    assert "training: none this time (the checkpoint had finished at epoch 2)" in out and "0 samples/s" not in out
