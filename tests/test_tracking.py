"""MLflow tracking: what a tracked run records, the champion gate, resumes, and failing fast.

Every test uses its own temporary SQLite store (or a real ``mlflow server`` on 127.0.0.1)
through ``MLFLOW_TRACKING_URI``, with the working directory in a temporary folder, so
nothing lands in the repository.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from mlp_jax import registry, runner
from mlp_jax.config import ConfigError, apply_overrides, to_flat_dict
from mlp_jax.summary import RunSummary
from tests.helpers import (
    MODEL,
    ROOT,
    free_port,
    spawn,
    stop,
    tiny_config,
    tracked,
    use_store,
    wait_http,
    write_tiny_csv,
)

mlflow = pytest.importorskip("mlflow")
from mlflow.tracking import MlflowClient  # noqa: E402

from mlp_jax import tracking  # noqa: E402

pytestmark = pytest.mark.slow  # end to end: subprocesses, servers, whole runs

# ----------------------------------------------------------------------------- a tracked run


@pytest.fixture
def store(tmp_path: Path, mlflow_db, monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    """An empty SQLite store and a tiny CSV in ``tmp_path`` (the working directory)."""
    uri = use_store(monkeypatch, tmp_path, mlflow_db(tmp_path))
    csv = write_tiny_csv(tmp_path / "tiny.csv")
    return SimpleNamespace(folder=tmp_path, csv=csv, uri=uri, client=MlflowClient(uri))


def test_tracked_runs_record_everything_and_the_champion_gate_goes_both_ways(store):
    """One test, so that the three runs it needs are trained once under pytest-xdist."""
    config = tracked(store.folder, store.csv, "first", **{"train.epochs": "2"})
    s = runner.run(config, progress=False)
    client = store.client
    run = client.get_run(s["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert (store.folder / "mlflow.db").is_file() and (store.folder / "mlruns").is_dir()

    flat = to_flat_dict(config)
    assert set(run.data.params) == {*flat, "buckets"}  # buckets: the logged model's model_config
    assert run.data.params["model.hidden_sizes"] == "16,8" and run.data.params["train.epochs"] == "2"

    for key in tracking.EPOCH_METRICS:
        history = client.get_metric_history(run.info.run_id, key)
        assert [m.step for m in history] == ([] if key.endswith("_rmse") else [1, 2]), key
    val = [m.value for m in client.get_metric_history(run.info.run_id, "val_loss")]
    assert min(val) == pytest.approx(s["best_val_loss"])
    for key in ("test_accuracy", "test_loss", "test_roc_auc", "test_macro_f1", "best_val_loss"):
        assert key in run.data.metrics, key
    assert run.data.metrics["test_accuracy"] == pytest.approx(s["test_accuracy"])

    (inp,) = run.inputs.dataset_inputs
    assert inp.dataset.digest == s["dataset"]["digest"] and inp.dataset.name == "tiny"
    assert str(store.csv) in inp.dataset.source
    schema = json.loads(inp.dataset.schema)["mlflow_colspec"]
    assert [c["name"] for c in schema] == [*s["feature_names"], "target"]
    assert {t.key: t.value for t in inp.tags}["mlflow.data.context"] == "training"

    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.json", "summary.json", "plots"} <= names
    plots = {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "plots")}
    assert plots == {
        "loss_curve.png",
        "confusion_matrix.png",
        "classification_report.json",
        "classification_report.txt",
    }
    logged = json.loads(
        Path(mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="config.json")).read_text()
    )
    assert logged["model"]["hidden_sizes"] == [16, 8]

    on_disk = json.loads((Path(s["workdir"]) / "summary.json").read_text())
    assert on_disk["mlflow_run_id"] == run.info.run_id
    assert on_disk["registered_model"] == MODEL and on_disk["model_version"] == "1" and on_disk["champion"] is True
    mv = client.get_model_version(MODEL, "1")
    assert mv.run_id == run.info.run_id
    assert mv.tags["dataset_digest"] == s["dataset"]["digest"]
    assert float(mv.tags["best_val_loss"]) == pytest.approx(s["best_val_loss"])
    assert str(client.get_model_version_by_alias(MODEL, "champion").version) == "1"
    (output,) = run.outputs.model_outputs
    assert mv.source == f"models:/{output.model_id}"
    linked = {m.key: m for m in client.get_logged_model(output.model_id).metrics}
    assert linked["test_accuracy"].dataset_digest == s["dataset"]["digest"]
    assert run.data.tags["champion_gate.decision"] == "promoted"
    assert json.loads((Path(s["workdir"]) / tracking.RUN_FILE).read_text())["run_id"] == run.info.run_id

    # the gate, both ways, against that champion
    champion_loss = s["best_val_loss"]
    worse = runner.run(tracked(store.folder, store.csv, "worse", **{"train.epochs": "1"}), progress=False)
    assert worse["best_val_loss"] > champion_loss  # precondition: 1 epoch validates worse than 2
    assert worse["champion"] is False and worse["champion_gate"]["decision"] == "rejected"
    assert str(store.client.get_model_version_by_alias(MODEL, "champion").version) == "1"

    better = runner.run(tracked(store.folder, store.csv, "better", **{"train.epochs": "6"}), progress=False)
    assert better["best_val_loss"] < champion_loss
    assert better["champion"] is True and better["champion_gate"]["champion_version"] == "1"
    champ = store.client.get_model_version_by_alias(MODEL, "champion")
    assert str(champ.version) == better["model_version"] != worse["model_version"]

    for challenger, decision in ((worse, "rejected"), (better, "promoted")):
        tags = client.get_run(challenger["mlflow_run_id"]).data.tags
        assert tags["champion_gate.decision"] == decision
        assert float(tags["champion_gate.champion_val_loss"]) == pytest.approx(champion_loss)
        assert float(tags["champion_gate.challenger_val_loss"]) == pytest.approx(challenger["best_val_loss"])
        assert client.get_model_version(MODEL, challenger["model_version"]).tags["champion_gate.decision"] == decision


def test_gate_rules():
    champ = {"version": "3", "val_loss": 0.2, "dataset_digest": "abc"}
    assert registry.champion_gate(0.5, "abc", None).promote
    assert registry.champion_gate(0.1, "abc", champ).promote
    assert not registry.champion_gate(0.2, "abc", champ).promote  # a tie keeps the champion
    assert not registry.champion_gate(0.3, "abc", champ).promote
    other = registry.champion_gate(0.1, "xyz", champ)
    assert not other.promote and "not comparable" in other.reason and "abc" in other.reason
    assert not registry.champion_gate(float("nan"), "abc", None).promote
    assert not registry.champion_gate(0.1, "abc", {"version": "1", "val_loss": None, "dataset_digest": "abc"}).promote


def test_gate_compares_only_on_the_same_validation_set():
    a = registry.validation_set("abc", "classification", ("hard",), 0, 0.15, 0.15)
    assert a == "abc target hard (classification) seed 0 split 0.15/0.15"
    champ = {"version": "1", "val_loss": 0.69, "dataset_digest": "abc", "validation_set": a}
    for other in (
        registry.validation_set("abc", "classification", ("easy",), 0, 0.15, 0.15),  # another target, same file
        registry.validation_set("abc", "classification", ("hard",), 1, 0.15, 0.15),  # other validation rows
        registry.validation_set("abc", "classification", ("hard",), 0, 0.2, 0.15),
        registry.validation_set("abc", "classification", ("hard",), 0, 0.15, 0.15, "out-of-fold"),  # k-fold members
    ):
        d = registry.champion_gate(0.06, "abc", champ, validation=other)
        assert not d.promote and d.reason.startswith("not comparable") and other in d.reason and a in d.reason
    assert registry.champion_gate(0.06, "abc", champ, validation=a).promote
    old = {k: v for k, v in champ.items() if k != "validation_set"}  # registered before the tag: digest only
    assert registry.champion_gate(0.06, "abc", old, validation=a).promote
    # a regression challenger against a classification champion of the same file: the champion has no
    # best_val_rmse, but the reason is that they are not comparable, not the missing number
    b = registry.validation_set("abc", "regression", ("price",), 0, 0.15, 0.15)
    d = registry.champion_gate(57.8, "abc", {**champ, "val_loss": None}, metric="best_val_rmse", validation=b)
    assert not d.promote and d.reason.startswith("not comparable") and "regression" in d.reason
    d = registry.champion_gate(57.8, "abc", {**champ, "val_loss": None}, metric="best_val_rmse", validation=a)
    assert not d.promote and d.reason == "champion v1 has no recorded best_val_rmse"


def test_a_run_on_other_validation_rows_never_takes_the_champion(store):
    first = runner.run(tracked(store.folder, store.csv, "s0", **{"train.epochs": "2"}), progress=False)
    other = runner.run(tracked(store.folder, store.csv, "s1", **{"train.epochs": "6", "seed": "1"}), progress=False)
    assert first["champion"] is True and other["champion"] is False
    version = store.client.get_model_version(MODEL, other["model_version"])
    assert "not comparable" in version.tags["champion_gate.reason"] and "seed 1" in version.tags["validation_set"]
    assert str(store.client.get_model_version_by_alias(MODEL, "champion").version) == first["model_version"]


def test_out_of_fold_validation_is_never_compared_with_held_out_validation(store):
    """K-fold members score the pooled training + validation rows out of fold, a single model the
    validation rows: other rows, so the gate must not compare the two numbers."""
    single = runner.run(tracked(store.folder, store.csv, "one", **{"train.epochs": "2"}), progress=False)
    kfold = runner.run(
        tracked(store.folder, store.csv, "kfold", **{"train.epochs": "2", "train.members": "3"}), progress=False
    )
    assert single["champion"] is True and kfold["validation"] == "out-of-fold" and kfold["champion"] is False
    version = store.client.get_model_version(MODEL, kfold["model_version"])
    assert "not comparable" in version.tags["champion_gate.reason"]
    assert "out-of-fold" in version.tags["validation_set"]
    held = store.client.get_model_version(MODEL, single["model_version"]).tags["validation_set"]
    assert "out-of-fold" not in held  # a held-out champion's tag is unchanged (older champions stay comparable)


def test_resumes_backfill_a_new_run_continue_a_crashed_one_and_never_reopen_a_finished_one(store):
    from mlp_jax import data as data_lib

    client = store.client

    def config(epochs: int, **kw: str):
        kw = {"train.epochs": str(epochs), "tracking.registered_model": "resume-model", **kw}
        return tracked(store.folder, store.csv, "resume", **kw)

    runner.run(config(2, **{"tracking.enabled": "false"}), progress=False)  # epochs 1-2 untracked
    first = runner.run(config(3), progress=False)
    run_id = first["mlflow_run_id"]
    assert first["resumed_from_epoch"] == 2
    assert sorted(m.step for m in client.get_metric_history(run_id, "val_loss")) == [1, 2, 3]  # 1-2 from the checkpoint

    client.set_terminated(run_id, "FAILED")  # as a crash after the last checkpoint leaves it
    again = runner.run(config(4), progress=False)
    assert again["resumed_from_epoch"] == 3 and again["mlflow_run_id"] == run_id
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert sorted(m.step for m in client.get_metric_history(run_id, "train_loss")) == [1, 2, 3, 4]  # none twice
    assert run.data.tags["mlp_jax.resume_changed.train.epochs"] == "3 -> 4"
    assert run.data.params["train.epochs"] == "3"  # params are immutable in MLflow; the change is a tag

    session = tracking.start(config(5), data_lib.prepare(config(5).data, 0))
    try:
        assert session.run_id != run_id
        assert client.get_run(session.run_id).data.tags["mlp_jax.continues_run"] == run_id
    finally:
        session.abort(None)


def test_reruns_register_nothing_twice_a_refused_resume_strands_nothing(store):
    """A finished run run again gets its registered version back (no duplicate); a rerun refused
    before training (another seed) leaves the crashed run continuable; a run killed before its
    first checkpoint is ended by the rerun that replaces it, never left RUNNING."""
    client = store.client

    def config(epochs: int, workdir: str = "again", **kw: str):
        kw = {"train.epochs": str(epochs), "tracking.registered_model": "again-model", **kw}
        return tracked(store.folder, store.csv, workdir, **kw)

    first = runner.run(config(2), progress=False)
    rerun = runner.run(config(2), progress=False)  # finished: nothing to train
    assert rerun["mlflow_run_id"] != first["mlflow_run_id"] and rerun["model_version"] == first["model_version"]
    assert [str(v.version) for v in client.search_model_versions("name='again-model'")] == [first["model_version"]]
    assert rerun["champion_gate"]["decision"] == "already registered"

    client.set_terminated(rerun["mlflow_run_id"], "FAILED")  # as a crash after the last checkpoint leaves it
    with pytest.raises(Exception, match="refusing to resume"):
        runner.run(config(3, seed="1"), progress=False)  # refused before training
    again = runner.run(config(3), progress=False)
    assert again["mlflow_run_id"] == rerun["mlflow_run_id"]  # the crashed run, still continuable
    assert client.get_run(again["mlflow_run_id"]).info.status == "FINISHED"

    stale = client.create_run(client.get_run(first["mlflow_run_id"]).info.experiment_id).info.run_id
    workdir = store.folder / "killed-early"
    workdir.mkdir()
    run_file = {"run_id": stale, "tracking_uri": store.uri, "status": "RUNNING"}
    (workdir / tracking.RUN_FILE).write_text(json.dumps(run_file))
    fresh = runner.run(config(2, "killed-early"), progress=False)  # killed before its first checkpoint
    old = client.get_run(stale)
    assert fresh["mlflow_run_id"] != stale and old.info.status == "FAILED"
    assert fresh["mlflow_run_id"] in old.data.tags["mlp_jax.error"]


def test_an_ensemble_killed_before_its_first_artifact_continues_its_run(store):
    client = store.client
    cfg = tracked(store.folder, store.csv, "ens", **{"train.epochs": "2", "train.members": "2"})
    first = runner.run(cfg, progress=False)
    run_id = first["mlflow_run_id"]
    workdir = store.folder / "ens"
    for step in [p for p in workdir.iterdir() if p.name.isdigit()]:  # as a kill -9 during training leaves it:
        shutil.rmtree(step)  # the members' training checkpoints in group-0, no ensemble artifact yet
    client.set_terminated(run_id, "FAILED")
    again = runner.run(apply_overrides(cfg, ["train.epochs=3"]), progress=False)
    assert again["mlflow_run_id"] == run_id and again["resumed_from_epoch"] == 2
    assert client.get_run(run_id).info.status == "FINISHED"


def test_writer_sends_one_batch_per_epoch_in_the_background_and_flush_reports_failures(store):
    client = store.client
    run = client.create_run(client.create_experiment("writer"))
    writer = tracking.MlflowWriter(client, run.info.run_id)
    for epoch in (1, 2, 3):
        writer.write_scalars(epoch, {"train_loss": 1.0 / epoch, "val_loss": 2.0 / epoch})
    writer.write_scalars(2, {"train_loss": 9.0})  # an epoch already recorded is not sent again
    writer.flush()
    history = client.get_metric_history(run.info.run_id, "train_loss")
    assert [(m.step, m.value) for m in history] == [(1, 1.0), (2, 0.5), (3, 1.0 / 3)]

    client.delete_run(run.info.run_id)  # the store now refuses this run
    writer.write_scalars(4, {"train_loss": 0.25})
    with pytest.raises(tracking.TrackingError, match=r"1 epoch metric batch\(es\) of MLflow run .* not recorded"):
        writer.close()


def test_a_model_that_cannot_predict_is_not_registered_and_the_run_fails(store, trained_workdir):
    from mlp_jax import data as data_lib
    from mlp_jax.artifact import resolve

    workdir, step = resolve(trained_workdir)
    broken = store.folder / "broken"
    shutil.copytree(workdir / str(step), broken / str(step))
    shutil.rmtree(broken / str(step) / "best_params")  # metadata intact, the served parameters gone
    config = tracked(store.folder, store.csv, "broken", **{"tracking.registered_model": "broken-model"})
    session = tracking.start(config, data_lib.prepare(config.data, config.seed))
    summary = json.loads((workdir / "summary.json").read_text())
    report = json.loads((workdir / "plots" / "classification_report.json").read_text())
    with pytest.raises(tracking.TrackingError, match="failed to load and predict"):
        try:
            session.finish(store.folder, RunSummary.from_dict(summary), [], report, [], str(broken / str(step)))
        except BaseException as e:
            session.abort(e)
            raise
    assert store.client.search_model_versions("name='broken-model'") == []
    run = store.client.get_run(session.run_id)
    assert run.info.status == "FAILED" and "failed to load and predict" in run.data.tags["mlp_jax.error"]


# ----------------------------------------------------------------------------- failing fast


def test_unreachable_tracking_server_fails_before_training(tmp_path, tiny_csv, capsys):
    port = free_port()  # nothing listens there
    config = tracked(tmp_path, tiny_csv, "run", **{"tracking.uri": f"http://127.0.0.1:{port}"})
    t = time.perf_counter()
    code = runner.main(lambda: config, [])
    assert code == 1 and time.perf_counter() - t < 30
    err = capsys.readouterr().err
    assert f"cannot reach the MLflow tracking server at http://127.0.0.1:{port}" in err
    assert not (tmp_path / "run").exists()  # nothing trained, no checkpoint


def test_unusable_sqlite_store_fails_before_training(tmp_path, tiny_csv, monkeypatch):
    (tmp_path / "a-file").write_text("not a folder")
    use_store(monkeypatch, tmp_path, f"sqlite:///{tmp_path / 'a-file' / 'mlflow.db'}")
    with pytest.raises(tracking.TrackingError, match="does not exist or is not a folder"):
        runner.run(tracked(tmp_path, tiny_csv, "run"), progress=False)
    assert not (tmp_path / "run").exists()


def test_a_registered_model_name_mlflow_refuses_fails_before_training(store):
    config = tracked(store.folder, store.csv, "run", **{"tracking.registered_model": "team/model"})
    with pytest.raises(tracking.TrackingError, match=r"tracking.registered_model 'team/model': .*cannot contain '/'"):
        runner.run(config, progress=False)
    assert not (store.folder / "run").exists()


def test_locked_sqlite_store_fails_before_training(store):
    db = store.folder / "mlflow.db"
    tmp_path = store.folder
    lock = sqlite3.connect(db, isolation_level=None)
    try:
        lock.execute("BEGIN EXCLUSIVE")  # another process holding a write transaction
        with pytest.raises(tracking.TrackingError, match=r"(?s)not usable.*nothing was trained"):
            runner.run(tracked(tmp_path, store.csv, "run"), progress=False)
    finally:
        lock.close()
    assert not any((tmp_path / "run").glob("[0-9]*"))


# ----------------------------------------------------------------------------- entry point and HTTP


def test_a_sqlite_store_elsewhere_keeps_the_artifacts_beside_it(tmp_path, mlflow_db, monkeypatch):
    """Runs started from another folder write their artifacts (plots, the model) beside the database."""
    store, cwd = tmp_path / "store", tmp_path / "cwd"
    store.mkdir()
    cwd.mkdir()
    uri = use_store(monkeypatch, cwd, mlflow_db(store))
    csv = write_tiny_csv(tmp_path / "tiny.csv")
    summary = runner.run(tracked(tmp_path, csv, "run", **{"train.epochs": "2"}), progress=False)
    run = MlflowClient(uri).get_run(summary["mlflow_run_id"])
    assert run.info.artifact_uri.startswith((store / "mlruns").as_uri()), run.info.artifact_uri
    assert any((store / "mlruns").rglob("loss_curve.png")) and any((store / "mlruns").rglob("MLmodel"))
    assert not (cwd / "mlruns").exists()
    assert tracking.artifacts_beside(f"sqlite:///{cwd / 'mlflow.db'}") is None  # the default layout, unchanged
    assert tracking.artifacts_beside("http://127.0.0.1:5000") is None


def test_baseline_tracks_into_the_default_store_in_the_cwd_and_untracked_runs_never_import_mlflow(tmp_path, mlflow_db):
    """With nothing configured: ./mlflow.db and ./mlruns in the working directory; with
    ``tracking.enabled=false`` mlflow is never imported (one process, to pay JAX's start-up once)."""
    csv = write_tiny_csv(tmp_path / "tiny.csv")
    mlflow_db(tmp_path)  # where MLflow's default store lives; pre-migrated only to save seconds
    common = [f"data.path={csv}", "model.hidden_sizes=8", "train.epochs=2", "train.batch_size=32"]
    common += ["train.progress=false", "train.compare_sklearn=false"]
    code = (
        "import sys; from experiments import baseline\n"
        f"assert baseline.main({[*common, 'workdir=untracked', 'tracking.enabled=false']!r}) == 0\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('mlflow', 'litestar')]\n"
        "assert not bad, bad\n"
        f"sys.exit(baseline.main({[*common, 'workdir=run']!r}))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert (tmp_path / "untracked" / "summary.json").exists()
    assert "mlflow_run_id" not in json.loads((tmp_path / "untracked" / "summary.json").read_text())
    assert f"mlflow ui --backend-store-uri sqlite:///{tmp_path}/mlflow.db" in out.stdout
    assert "champion gate" in out.stdout and "PROMOTED" in out.stdout
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["champion"] is True and summary["registered_model"] == "mlp-jax"
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = client.get_run(summary["mlflow_run_id"])
    assert run.info.artifact_uri.startswith(str(tmp_path / "mlruns"))
    assert any((tmp_path / "mlruns").rglob("loss_curve.png"))
    assert client.get_model_version_by_alias("mlp-jax", "champion").run_id == run.info.run_id


def test_logging_to_a_real_mlflow_server_over_http(tmp_path, tiny_csv, monkeypatch, mlflow_db):
    port = free_port()
    backend = mlflow_db(tmp_path)
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    env.pop("MLFLOW_TRACKING_URI", None)
    server = spawn(
        [
            str(Path(sys.executable).with_name("mlflow")),
            "server",
            "--backend-store-uri",
            backend,
            "--artifacts-destination",
            str(tmp_path / "server-artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        tmp_path,
        env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/health", server, timeout=90)
        use_store(monkeypatch, tmp_path, url)
        summary = runner.run(tracked(tmp_path, tiny_csv, "run", **{"train.epochs": "2"}), progress=False)
        client = MlflowClient(url)
        run = client.get_run(summary["mlflow_run_id"])
        assert run.info.status == "FINISHED" and run.info.artifact_uri.startswith("mlflow-artifacts:")
        assert [m.step for m in client.get_metric_history(run.info.run_id, "val_accuracy")] == [1, 2]
        assert {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "plots")} >= {"loss_curve.png"}
        assert any((tmp_path / "server-artifacts").rglob("loss_curve.png"))  # stored by the server, not locally
        assert not (tmp_path / "mlruns").exists()
        assert str(client.get_model_version_by_alias(MODEL, "champion").version) == summary["model_version"] == "1"

        from mlp_jax.predictor import Predictor

        remote = Predictor.load(f"models:/{MODEL}@champion", buckets=(8,))
        local = Predictor.load(Path(summary["checkpoint"]), buckets=(8,))
        rows = [[0.1 * i - 0.3 * j for j in range(local.n_features)] for i in range(5)]
        assert (remote.predict_proba(rows) == local.predict_proba(rows)).all()
    finally:
        stop(server)


def test_dataset_schema_uses_the_real_column_names_even_a_feature_called_target(tmp_path):
    """Issue #16: the schema once named the label `target` whatever it was, and held `target` twice."""
    import pandas as pd

    from mlp_jax import config as C
    from mlp_jax import data as D

    rng = __import__("numpy").random.default_rng(0)
    frame = pd.DataFrame(
        {
            "target": rng.normal(size=120),  # a feature that happens to be called target
            "colour": rng.choice(["red", "blue", None], size=120),
            "label": rng.choice(["yes", "no"], size=120),
        }
    )
    frame.to_csv(tmp_path / "t.csv", index=False)
    cfg = C.apply_overrides(C.Config(), [f"data.path={tmp_path / 't.csv'}", "data.target=label"])
    entity = tracking._dataset_entity(D.prepare(cfg.data, 0, verbose=False))
    schema = json.loads(entity.to_dict()["schema"])["mlflow_colspec"]
    assert [c["name"] for c in schema] == ["target", "colour", "label"]
    types = {c["name"]: c["type"] for c in schema}
    assert types == {"target": "double", "colour": "string", "label": "string"}
    assert next(c for c in schema if c["name"] == "colour")["required"] is False  # it has gaps


def test_which_sweep_runs_a_rerun_continues(tmp_path, mlflow_db):
    """A killed sweep's parent and member runs are continued only when they are that sweep's: same
    store, experiment and members (index and swept values), a checkpoint to resume, not finished."""
    uri = mlflow_db(tmp_path)
    client = MlflowClient(uri)
    exp = client.create_experiment("e")
    members = [SimpleNamespace(index=i, values={"seed": i}) for i in range(2)]
    workdir = tmp_path / "w"

    def killed_sweep() -> tuple[str, dict[int, str]]:
        parent = client.create_run(exp).info.run_id
        kids = {
            m.index: client.create_run(
                exp, tags={"mlflow.parentRunId": parent, "mlp_jax.sweep_values": json.dumps(m.values)}
            ).info.run_id
            for m in members
        }
        workdir.mkdir(exist_ok=True)
        run_file = {"run_id": parent, "tracking_uri": uri, "status": "RUNNING", "children": kids}
        (workdir / tracking.RUN_FILE).write_text(json.dumps(run_file))
        return parent, kids

    def decide(uri, members):
        prev, children = tracking._continuable_sweep(client, workdir, uri, exp, members)
        return prev.continue_id, children, prev.follows

    parent, kids = killed_sweep()
    assert decide(uri, members) == (None, {}, None)  # no checkpoint: killed before its first one
    assert tracking._continuable_sweep(client, workdir, uri, exp, members)[0].stranded == (parent, *kids.values())
    (workdir / "group-0" / "3").mkdir(parents=True)
    assert decide(uri, members) == (parent, kids, None)
    assert decide("sqlite:///other.db", members) == (None, {}, None)
    other = [SimpleNamespace(index=i, values={"seed": i + 1}) for i in range(2)]
    assert decide(uri, other) == (None, {}, parent)
    assert decide(uri, members[:1]) == (None, {}, parent)
    client.delete_run(kids[1])
    assert decide(uri, members) == (None, {}, parent)
    parent, kids = killed_sweep()
    client.set_terminated(parent, "FINISHED")  # a finished sweep is followed, never reopened
    assert decide(uri, members) == (None, {}, parent)
    damaged_ids = [json.dumps({"tracking_uri": uri, "run_id": v}) for v in (None, 7, ["a"], "", "no-such-run")]
    for damaged in ("{not json", "[1, 2]", json.dumps({"tracking_uri": uri}), *damaged_ids):
        (workdir / tracking.RUN_FILE).write_text(damaged)
        assert decide(uri, members) == (None, {}, None)


@pytest.mark.parametrize("members", ["1", "3"])
def test_a_batch_larger_than_the_rows_leaves_no_mlflow_run(tmp_path, monkeypatch, mlflow_db, members):
    """The refusal comes before tracking opens a run, for one model and for k-fold members alike."""
    csv = write_tiny_csv(tmp_path / "tiny.csv")
    uri = use_store(monkeypatch, tmp_path, mlflow_db(tmp_path))
    cfg = tiny_config(
        tmp_path, csv, **{"train.batch_size": "5000", "train.members": members, "tracking.enabled": "true"}
    )
    with pytest.raises(ConfigError, match=r"train\.batch_size: 5000 is larger than the \d+ training rows"):
        runner.run(cfg, progress=False)
    client = MlflowClient(uri)
    assert client.search_runs([e.experiment_id for e in client.search_experiments()]) == []
