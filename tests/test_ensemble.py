"""Sweeps end to end: experiments.sweep tracked in a real SQLite store, spec errors, kill -9 + rerun,
and a deep ensemble served by the predictor, the service, the batch command and the pyfunc."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pandas as pd
import pytest

from experiments import sweep as sweep_experiment
from mlp_jax import artifact
from mlp_jax import sweep as S
from mlp_jax.predictor import Predictor
from tests.helpers import (
    MODEL,
    ROOT,
    count_compilations,
    sigkill_when,
    use_store,
    write_regression_csv,
    write_tiny_csv,
)

pytestmark = pytest.mark.slow  # end to end: sweeps, ensemble artifacts, servers, tracked runs

K = 2  # ensemble members


def _args(csv: Path, workdir: Path, **overrides: str) -> list[str]:
    items = {
        "workdir": str(workdir),
        "data.path": str(csv),
        "model.hidden_sizes": "16,8",
        "train.epochs": "3",
        "train.batch_size": "32",
        "train.patience": "0",
        "train.checkpoint_every": "1",
        "train.progress": "false",
        "tracking.registered_model": MODEL,
        "sweep.optim.learning_rate": "3e-3,1e-2",
        "sweep.seed": "0,1",
        "sweep.ensemble_top_k": str(K),
        **overrides,
    }
    return [f"{k}={v}" for k, v in items.items()]


@pytest.fixture(scope="module")
def tracked_sweep(tmp_path_factory, mlflow_db):
    """One tracked 4-member sweep (2 learning rates x 2 seeds, top-2 ensemble) in a fresh SQLite store."""
    folder = tmp_path_factory.mktemp("tracked-sweep")
    csv = write_tiny_csv(folder / "tiny.csv")
    uri = mlflow_db(folder)
    with pytest.MonkeyPatch.context() as mp:
        use_store(mp, folder, uri)
        assert sweep_experiment.main(_args(csv, folder / "w")) == 0
        summary = json.loads((folder / "w" / "summary.json").read_text())
        yield folder, csv, uri, summary


# ----------------------------------------------------------------------------- tracking


def test_tracked_sweep_has_parent_children_and_two_registered_models(tracked_sweep):
    from mlflow.tracking import MlflowClient

    folder, _, uri, summary = tracked_sweep
    client = MlflowClient(uri)
    parent = client.get_run(summary["mlflow_run_id"])
    assert parent.info.status == "FINISHED"
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert len(children) == 4 == len(summary["members"])
    by_member = {int(c.data.tags["mlp_jax.sweep_member"]): c for c in children}
    for row in summary["members"]:
        child = by_member[row["member"]]
        assert child.info.status == "FINISHED"
        assert child.data.params["seed"] == str(row["values"]["seed"])
        assert child.data.params["sweep.member"] == str(row["member"]) and "sweep.axes" not in child.data.params
        assert float(child.data.params["optim.learning_rate"]) == row["values"]["optim.learning_rate"]
        history = client.get_metric_history(child.info.run_id, "val_loss")
        assert sorted(m.step for m in history) == list(range(1, row["epochs_run"] + 1))
        assert child.data.metrics["best_val_loss"] == pytest.approx(row["best_val_loss"])
        assert child.data.tags["mlp_jax.stopped"] == row["stopped"]

    best, ens = summary["models"]["best_member"], summary["models"]["ensemble"]
    ranked = sorted(summary["members"], key=lambda r: (r["best_val_loss"], r["member"]))
    assert best["members"] == [ranked[0]["member"]]
    assert len(ens["members"]) == K and ens["members"][0] == best["members"][0]
    # the printed comparison is the top-K of sweep.ensemble_top_k (here one group: the saved ensemble)
    assert summary["ensemble"]["top"] == ens["members"]
    assert summary["ensemble"][f"top{K}_val_log_loss"] == pytest.approx(ens["val_loss"])
    versions = {str(v.version): v for v in client.search_model_versions(f"name='{MODEL}'")}
    assert len(versions) == 2
    assert versions[best["model_version"]].run_id == by_member[best["members"][0]].info.run_id
    assert versions[ens["model_version"]].run_id == parent.info.run_id
    assert best["model_version"] != ens["model_version"]
    # the gate ran for both: the first registered became champion
    champion = str(client.get_model_version_by_alias(MODEL, "champion").version)
    assert champion in (best["model_version"], ens["model_version"])
    assert "best_member_test_loss" in parent.data.metrics and "ensemble_test_loss" in parent.data.metrics
    assert (folder / "w" / "summary.json").exists()


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"sweep.axes": "", "sweep.optim.learning_rate": None, "sweep.seed": None}, "nothing to sweep"),
        ({"train.batch_size": "100000"}, "larger than"),
        ({"sweep.ensemble_top_k": "-1"}, "ensemble_top_k"),
    ],
)
def test_empty_or_malformed_spec_writes_nothing(tmp_path, monkeypatch, mlflow_db, capsys, overrides, message):
    csv = write_tiny_csv(tmp_path / "tiny.csv")
    uri = mlflow_db(tmp_path)
    use_store(monkeypatch, tmp_path, uri)
    args = [a for a in _args(csv, tmp_path / "w", **{k: v for k, v in overrides.items() if v is not None})]
    args = [a for a in args if a.split("=", 1)[0] not in {k for k, v in overrides.items() if v is None}]
    assert sweep_experiment.main(args) != 0
    assert message in capsys.readouterr().err
    assert not (tmp_path / "w").exists()
    from mlflow.tracking import MlflowClient

    assert MlflowClient(uri).search_runs([e.experiment_id for e in MlflowClient(uri).search_experiments()]) == []


def test_malformed_axis_is_a_config_error(tmp_path, capsys):
    csv = write_tiny_csv(tmp_path / "tiny.csv")
    assert sweep_experiment.main(_args(csv, tmp_path / "w", **{"sweep.optim.learning_rate": "fast"})) == 2
    assert "sweep.optim.learning_rate" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()


# ----------------------------------------------------------------------------- serving


def _member_probs(summary: dict, folder: Path, x: np.ndarray, ids: list[int]) -> np.ndarray:
    """Each member's probabilities from the sweep checkpoint (independently of the ensemble artifact)."""
    loaded = artifact.load(summary["models"]["ensemble"]["checkpoint"])
    return S.member_outputs(loaded.graphdef, loaded.params, x, list(range(len(ids))))


def test_ensemble_predictor_mean_and_spread(tracked_sweep):
    folder, csv, _, summary = tracked_sweep
    ens = Predictor.load(summary["models"]["ensemble"]["checkpoint"])
    single = Predictor.load(summary["models"]["best_member"]["checkpoint"])
    assert ens.members == K and single.members == 1
    frame = pd.read_csv(csv).head(70)
    x = ens.encode(frame)
    per_member = _member_probs(summary, folder, x, summary["models"]["ensemble"]["members"])
    out = ens.run_encoded(x)
    probs, spread = ens.split(out)
    np.testing.assert_allclose(probs, per_member.mean(axis=0), atol=1e-6)
    np.testing.assert_allclose(spread, per_member.std(axis=0), atol=1e-6)
    # member 0 of the ensemble is the best member: same numbers as the single-model artifact
    np.testing.assert_allclose(per_member[0], single.predict_proba(frame), atol=1e-6)
    # a row's answer does not depend on its batch, and no request size compiles anything
    with count_compilations() as compiled:
        for n in (1, 5, 33, 70):
            np.testing.assert_array_equal(ens.run_encoded(x[:n]), out[:n])
    assert compiled == []
    assert ens.output_columns() == ["prediction", "proba_0", "proba_1", "std_0", "std_1"]
    assert single.output_columns() == ["prediction", "proba_0", "proba_1"]
    assert "spread" in ens.format(out[:1])[0] and "spread" not in single.format(single.run_encoded(x[:1]))[0]
    assert ens.describe()["members"] == K


def test_ensemble_through_service_and_batch_cli(tracked_sweep, tmp_path):
    from litestar.testing import TestClient

    from mlp_jax import predict, serve

    _, csv, _, summary = tracked_sweep
    ens = Predictor.load(summary["models"]["ensemble"]["checkpoint"])
    frame = pd.read_csv(csv).head(7)
    features = frame[list(ens.feature_names)]
    probs, spread = ens.split(ens.run_encoded(ens.encode(features)))
    with TestClient(serve.create_app(ens)) as client:
        one = client.post("/predict", json={"features": features.iloc[0].tolist()}).json()
        many = client.post("/predict", json={"instances": features.values.tolist()}).json()
        inv = client.post("/invocations", json={"dataframe_split": features.to_dict(orient="split")}).json()
        assert client.get("/metadata").json()["members"] == K
    np.testing.assert_allclose(one["probabilities"], probs[0], atol=1e-6)
    np.testing.assert_allclose(one["spread"], spread[0], atol=1e-6)
    np.testing.assert_allclose(many["spread"], spread, atol=1e-6)
    records = pd.DataFrame(inv["predictions"])
    np.testing.assert_allclose(records[["std_0", "std_1"]].to_numpy(), spread, atol=1e-6)

    single = Predictor.load(summary["models"]["best_member"]["checkpoint"])
    with TestClient(serve.create_app(single)) as client:
        assert "spread" not in client.post("/predict", json={"features": features.iloc[0].tolist()}).json()

    src = tmp_path / "in.csv"
    frame.to_csv(src, index=False)
    predict.predict_csv(ens, src, tmp_path / "out.csv", progress=False)
    out = pd.read_csv(tmp_path / "out.csv")
    np.testing.assert_allclose(out[["proba_0", "proba_1"]].to_numpy(), probs, atol=1e-6)
    np.testing.assert_allclose(out[["std_0", "std_1"]].to_numpy(), spread, atol=1e-6)


def test_ensemble_through_pyfunc(tracked_sweep, monkeypatch):
    import mlflow

    folder, csv, uri, summary = tracked_sweep
    use_store(monkeypatch, folder, uri)
    model = mlflow.pyfunc.load_model(summary["models"]["ensemble"]["model_uri"])
    outputs = [c.name for c in model.metadata.get_output_schema().inputs]
    assert outputs == ["prediction", "proba_0", "proba_1", "std_0", "std_1"]
    frame = pd.read_csv(csv).head(9)
    got = model.predict(frame.drop(columns=["target"]))
    ens = Predictor.load(summary["models"]["ensemble"]["checkpoint"])
    expected = ens.predict_frame(frame)
    pd.testing.assert_frame_equal(got.reset_index(drop=True), expected.reset_index(drop=True))


def test_artifact_members_field_defaults_to_one_and_is_checked(tracked_sweep):
    _, _, _, summary = tracked_sweep
    meta = artifact.read_meta_at(summary["models"]["ensemble"]["checkpoint"])
    assert meta.members == K
    d = meta.to_dict()
    del d["members"]  # a format-2 artifact written before ensembles existed
    assert artifact.ArtifactMeta.from_dict(d).members == 1
    with pytest.raises(artifact.CheckpointError, match="members"):
        artifact.ArtifactMeta.from_dict({**d, "members": 0})


def test_save_artifact_refuses_members_of_two_groups(tmp_path):
    csv = write_tiny_csv(tmp_path / "tiny.csv")
    from mlp_jax import config as C
    from mlp_jax import data as D

    cfg = C.apply_overrides(
        C.Config(),
        [f"data.path={csv}", "train.epochs=1", "train.batch_size=32", "sweep.model.hidden_sizes=8/4", "sweep.seed=0,1"],
    )
    ds = D.prepare(cfg.data, cfg.seed)
    result = S.run_sweep(cfg, ds)
    with pytest.raises(ValueError, match="span groups"):
        S.save_artifact(result, [0, 2], ds, tmp_path / "e", cfg)
    ids = S.ensemble_members(result, 4)  # the top-4 within the best member's group: its 2 members
    assert len(ids) == 2 and len({result.members[i].group for i in ids}) == 1
    assert ids[0] == S.top_k(result, 1)[0].index


# ----------------------------------------------------------------------------- regression


def test_regression_sweep_ensemble_registered_and_served_everywhere(tmp_path, monkeypatch, mlflow_db):
    """A two-target regression sweep: the gate compares validation RMSE, and the ensemble answers the
    members' mean prediction with their standard deviation (targets' units) in every entry point."""
    import mlflow
    from litestar.testing import TestClient
    from mlflow.tracking import MlflowClient

    from mlp_jax import predict, registry, serve

    csv = write_regression_csv(tmp_path / "reg.csv")
    uri = mlflow_db(tmp_path)
    use_store(monkeypatch, tmp_path, uri)
    reg = {"data.task": "regression", "data.target": "y1,y2", "train.epochs": "6"}
    assert sweep_experiment.main(_args(csv, tmp_path / "w", **reg)) == 0
    summary = json.loads((tmp_path / "w" / "summary.json").read_text())
    assert summary["task"] == "regression"
    ens_info, best_info = summary["models"]["ensemble"], summary["models"]["best_member"]
    assert len(ens_info["members"]) == K
    for m in (ens_info, best_info):
        assert m["val_loss"] == m["val_rmse"] > 0 and "test_r2" in m and "test_accuracy" not in m
    client = MlflowClient(uri)
    version = client.get_model_version(MODEL, ens_info["model_version"])
    assert float(version.tags["champion_gate.challenger_val_loss"]) == pytest.approx(ens_info["val_rmse"])
    assert version.tags["champion_gate.metric"] == registry.GATE_METRICS["regression"]

    ens = Predictor.load(ens_info["checkpoint"])
    single = Predictor.load(best_info["checkpoint"])
    frame = pd.read_csv(csv).head(40)
    features = frame.drop(columns=["y1", "y2"])
    x = ens.encode(features)
    loaded = artifact.load(ens_info["checkpoint"])
    stats = loaded.meta.target_stats
    scale, mean = np.asarray(stats["scale"]), np.asarray(stats["mean"])
    members = S.member_outputs(loaded.graphdef, loaded.params, x, task="regression") * scale + mean  # [K, n, 2]
    out = ens.run_encoded(x)
    pred, spread = ens.split(out)
    np.testing.assert_allclose(pred, members.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(spread, members.std(axis=0), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(members[0], single.predict_outputs(features), rtol=1e-5)  # member 0 = best member
    assert ens.output_columns() == ["prediction_y1", "prediction_y2", "std_y1", "std_y2"]
    assert single.output_columns() == ["prediction_y1", "prediction_y2"]

    body = features.astype(object).where(features.notna(), None)  # gaps travel as JSON null
    with TestClient(serve.create_app(ens)) as http:
        one = http.post("/predict", json={"instances": [body.iloc[0].to_dict()]}).json()
        inv = http.post("/invocations", json={"dataframe_split": body.to_dict(orient="split")}).json()
    np.testing.assert_allclose(one["predictions"][0], pred[0], rtol=1e-9)
    np.testing.assert_allclose(one["spread"][0], spread[0], rtol=1e-9)
    records = pd.DataFrame(inv["predictions"])
    np.testing.assert_allclose(records[["std_y1", "std_y2"]].to_numpy(), spread, rtol=1e-9)
    with TestClient(serve.create_app(single)) as http:
        assert "spread" not in http.post("/predict", json={"instances": [body.iloc[0].to_dict()]}).json()

    frame.to_csv(tmp_path / "in.csv", index=False)
    predict.predict_csv(ens, tmp_path / "in.csv", tmp_path / "out.csv", progress=False)
    written = pd.read_csv(tmp_path / "out.csv")
    np.testing.assert_allclose(written[["prediction_y1", "prediction_y2"]].to_numpy(), pred, rtol=1e-9)
    np.testing.assert_allclose(written[["std_y1", "std_y2"]].to_numpy(), spread, rtol=1e-9)

    model = mlflow.pyfunc.load_model(ens_info["model_uri"])
    assert [c.name for c in model.metadata.get_output_schema().inputs] == ens.output_columns()
    got = model.predict(features)
    pd.testing.assert_frame_equal(got.reset_index(drop=True), ens.predict_frame(features).reset_index(drop=True))


# ----------------------------------------------------------------------------- train.members in the runner


def test_auto_members_rule():
    from mlp_jax import config as C

    cfg = C.Config()
    assert cfg.train.members == C.AUTO
    assert C.auto_members(cfg, 1_999) == C.AUTO_MEMBERS == 8 and C.auto_members(cfg, 2_000) == 1
    assert C.auto_members(cfg, 300, n_processes=2) == 1  # members need one process
    assert C.auto_members(C.apply_overrides(cfg, ["train.members=3"]), 100_000) == 3
    assert C.apply_overrides(cfg, ["train.members=auto"]).train.members == C.AUTO
    with pytest.raises(C.ConfigError, match=r"train\.members"):
        C.apply_overrides(cfg, ["train.members=2", "sweep.seed=0,1"])


def test_runner_trains_members_as_one_ensemble_tracked_served_and_resumed(tmp_path, monkeypatch, mlflow_db):
    """train.members=3 through the runner: one program, one ensemble artifact registered through the
    gate on the ensemble's own validation loss; the test metrics are the served model's; a rerun
    resumes to the same numbers; a workdir of the other kind is refused by name."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from mlp_jax import config as C
    from mlp_jax import runner
    from tests.helpers import tiny_config

    csv = write_tiny_csv(tmp_path / "tiny.csv")
    uri = mlflow_db(tmp_path)
    use_store(monkeypatch, tmp_path, uri)
    cfg = tiny_config(
        tmp_path, csv, **{"train.members": "3", "tracking.enabled": "true", "tracking.registered_model": MODEL}
    )
    summary = runner.run(cfg, progress=False)
    assert summary["members"] == 3
    step = Path(summary["checkpoint"])
    assert step.parent == tmp_path / "run" and (tmp_path / "run" / "group-0").is_dir()
    ens = Predictor.load(tmp_path / "run")  # the workdir serves the ensemble
    assert ens.members == 3 and ens.checkpoint.path == step
    from mlp_jax import data as D

    ds = D.prepare(cfg.data, cfg.seed, verbose=False)
    probs, spread = ens.split(ens.run_encoded(ds.x_test))
    assert summary["test_accuracy"] == pytest.approx(float((probs.argmax(1) == ds.y_test).mean()))
    assert spread.max() > 0  # three different seeds disagree somewhere
    version = MlflowClient(uri).get_model_version(MODEL, summary["model_version"])
    assert float(version.tags["champion_gate.challenger_val_loss"]) == pytest.approx(summary["best_val_loss"])
    model = mlflow.pyfunc.load_model(summary["model_uri"])
    frame = pd.read_csv(csv).head(20).drop(columns=["target"])
    pd.testing.assert_frame_equal(
        model.predict(frame).reset_index(drop=True), ens.predict_frame(frame).reset_index(drop=True)
    )

    # a rerun resumes (train.compare_sklearn may change, as for one model) to the same numbers
    again = runner.run(C.apply_overrides(cfg, ["tracking.enabled=false", "train.compare_sklearn=true"]), progress=False)
    for key in ("test_accuracy", "test_loss", "best_val_loss", "best_epoch", "checkpoint"):
        assert again[key] == summary[key], key
    assert again["resumed_from_epoch"] == summary["epochs_run"]
    before = sorted(os.listdir(tmp_path / "run"))
    with pytest.raises(C.ConfigError, match="holds an ensemble"):
        runner.run(C.apply_overrides(cfg, ["tracking.enabled=false", "train.members=1"]), progress=False)
    with pytest.raises(C.ConfigError, match=r"cannot resume the ensemble in .* with train.members=2"):  # before Orbax
        runner.run(C.apply_overrides(cfg, ["tracking.enabled=false", "train.members=2"]), progress=False)
    assert sorted(os.listdir(tmp_path / "run")) == before
    single = tiny_config(tmp_path, csv, workdir=str(tmp_path / "single"))
    runner.run(single, progress=False)
    n_runs = len(MlflowClient(uri).search_runs([e.experiment_id for e in MlflowClient(uri).search_experiments()]))
    with pytest.raises(C.ConfigError, match="holds a single model"):  # refused before tracking opens a run
        runner.run(C.apply_overrides(single, ["train.members=2", "tracking.enabled=true"]), progress=False)
    assert (
        len(MlflowClient(uri).search_runs([e.experiment_id for e in MlflowClient(uri).search_experiments()])) == n_runs
    )


def test_runner_members_that_all_diverge_are_a_named_error(tmp_path):
    from mlp_jax import config as C
    from mlp_jax import runner, train
    from tests.helpers import tiny_config

    csv = write_tiny_csv(tmp_path / "tiny.csv")
    cfg = tiny_config(tmp_path, csv, **{"train.members": "2", "optim.learning_rate": "1e30", "model.dropout": "0"})
    with pytest.raises(train.NonFiniteLossError, match="every one of the 2 members"):
        runner.run(cfg, progress=False)
    assert not (tmp_path / "run" / "summary.json").exists()
    assert not (tmp_path / "run" / "group-0").exists()  # nothing to resume: following the advice starts clean
    fixed = runner.run(C.apply_overrides(cfg, ["optim.learning_rate=1e-3", "tracking.enabled=false"]), progress=False)
    assert fixed["members"] == 2 and math.isfinite(fixed["best_val_loss"])


def test_out_of_fold_validation_scores_only_the_folds_of_the_members_kept(tmp_path):
    """A k-fold member whose loss was never finite is left out of the ensemble; its fold was trained on
    by every member kept, so the out-of-fold numbers (what the champion gate compares) leave its rows out."""
    import jax.numpy as jnp

    from mlp_jax import artifact, runner, sweep
    from mlp_jax import data as D
    from mlp_jax import model as M
    from tests.helpers import tiny_config

    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(200, 4)), columns=list("abcd"))
    frame["target"] = 2 * frame["a"] + rng.normal(size=200)
    frame.to_csv(tmp_path / "reg.csv", index=False)
    overrides = {"data.task": "regression", "optim.name": "sgd", "optim.learning_rate": "3", "train.epochs": "2"}
    cfg = tiny_config(tmp_path, tmp_path / "reg.csv", **{**overrides, "train.members": "8"})
    summary = runner.run(cfg, progress=False)
    assert summary["validation"] == "out-of-fold"
    store = sweep._Store(sweep.group_dir(tmp_path / "run"))
    stoppers = store.meta(store.latest_step())["stoppers"]
    store.close()
    kept = [i for i, s in enumerate(stoppers) if s["best_loss"] is not None]
    assert 0 < len(kept) < 8, "the learning rate should make some members, not all, diverge"
    loaded = artifact.load(summary["checkpoint"])
    ds = D.prepare(cfg.data, cfg.seed, verbose=False)
    pooled, rows = sweep.kfold_dataset(ds, 8, cfg.seed)
    ys, outs = [], []
    for p, i in enumerate(kept):  # each kept member's own fold, answered by that member
        held = rows.fold == i
        params = jax.tree.map(lambda a, p=p: a[p], loaded.params)
        outs.append(np.asarray(M.apply(loaded.graphdef, params, jnp.asarray(pooled.x_train[held]))))
        ys.append(pooled.y_train[held])
    expected = sweep.ensemble_scores("regression", np.concatenate(ys), np.concatenate(outs))["loss"]
    assert summary["best_val_loss"] == pytest.approx(expected, rel=1e-4)


def test_resuming_an_ensemble_with_other_members_or_seed_names_the_run_keys(tmp_path):
    """The runner's members are a sweep over seeds, but a refused resume names train.members / seed
    (with both values), never the sweep.axes the user did not set; the workdir is left as it was."""
    from mlp_jax import config as C
    from mlp_jax import runner
    from tests.helpers import tiny_config

    csv = write_tiny_csv(tmp_path / "tiny.csv")
    cfg = tiny_config(tmp_path, csv, **{"train.members": "3", "train.epochs": "2"})
    runner.run(cfg, progress=False)
    before = sorted(os.listdir(tmp_path / "run"))
    for overrides, named in (
        (["train.members=2"], r"train\.members \(3 vs 2\)"),
        (["train.members=4"], r"train\.members \(3 vs 4\)"),
        (["seed=5"], r"seed \(0 vs 5\)"),
        (["train.members=4", "optim.learning_rate=0.01"], r"train\.members \(3 vs 4\), optim\.learning_rate"),
    ):
        with pytest.raises(C.ConfigError, match=named) as info:
            runner.run(C.apply_overrides(cfg, overrides), progress=False)
        assert "sweep.axes" not in str(info.value) and "cannot resume" in str(info.value)
        assert sorted(os.listdir(tmp_path / "run")) == before


# ----------------------------------------------------------------------------- kill -9


def _env() -> dict[str, str]:
    return {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
    }


def _sweep_cmd(csv: Path, workdir: Path, uri: str | None = None) -> list[str]:
    tracking = {"tracking.uri": uri} if uri else {"tracking.enabled": "false"}
    args = _args(csv, workdir, **{"train.epochs": "12", **tracking})
    return [sys.executable, "-m", "experiments.sweep", *args]


def _params(step: str) -> list[np.ndarray]:
    return [np.asarray(a) for a in jax.tree.leaves(artifact.load(step).params)]


@pytest.mark.slow
def test_sigkill_then_rerun_equals_an_uninterrupted_sweep(tmp_path, mlflow_db):
    """Bitwise the same models as an uninterrupted sweep, and in MLflow the same parent and member
    runs, continued and finished, each epoch logged once (the killed sweep is tracked)."""
    from mlflow.tracking import MlflowClient

    csv = write_tiny_csv(tmp_path / "data.csv", n=6000)
    ref = tmp_path / "ref"
    subprocess.run(_sweep_cmd(csv, ref), cwd=ROOT, check=True, capture_output=True, timeout=300, env=_env())
    workdir = tmp_path / "killed"
    uri = mlflow_db(tmp_path)
    cmd = _sweep_cmd(csv, workdir, uri)
    code = sigkill_when(cmd, _env(), (workdir / "group-0" / "3").exists, timeout=240)
    assert code == -signal.SIGKILL, "the sweep finished before it could be killed"
    assert not (workdir / "summary.json").exists()
    client = MlflowClient(uri)
    (experiment,) = [e for e in client.search_experiments() if e.name != "Default"]
    killed = {r.info.run_id: r.info.status for r in client.search_runs([experiment.experiment_id])}
    assert len(killed) == 5 and set(killed.values()) == {"RUNNING"}  # a parent and 4 members, left running
    rerun = subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True, timeout=300, env=_env())
    assert "continuing sweep run" in rerun.stdout
    runs = client.search_runs([experiment.experiment_id])
    assert {r.info.run_id for r in runs} == set(killed)  # no new runs
    assert {r.info.status for r in runs} == {"FINISHED"}
    summary = json.loads((workdir / "summary.json").read_text())
    for row in summary["members"]:
        child = summary["member_runs"][str(row["member"])]
        steps = [m.step for m in client.get_metric_history(child, "val_loss")]
        assert sorted(steps) == list(range(1, row["epochs_run"] + 1)), (child, steps)
    a = json.loads((ref / "summary.json").read_text())
    b = json.loads((workdir / "summary.json").read_text())
    assert a["members"] == b["members"]
    assert a["ensemble"] == b["ensemble"]
    for key in ("best_member", "ensemble"):
        assert a["models"][key]["members"] == b["models"][key]["members"]
        for x, y in zip(_params(a["models"][key]["checkpoint"]), _params(b["models"][key]["checkpoint"]), strict=True):
            np.testing.assert_array_equal(x, y)


def test_a_sweep_killed_after_registering_continues_without_registering_or_logging_twice(tmp_path, mlflow_db):
    """As a kill after both models were registered but before the runs ended leaves it: the rerun
    continues the same runs, gets the same two versions back and logs no final metric twice."""
    from mlflow.tracking import MlflowClient

    csv = write_tiny_csv(tmp_path / "tiny.csv")
    uri = mlflow_db(tmp_path)
    with pytest.MonkeyPatch.context() as mp:
        use_store(mp, tmp_path, uri)
        args = _args(csv, tmp_path / "w", **{"model.hidden_sizes": "8"})
        assert sweep_experiment.main(args) == 0
        first = json.loads((tmp_path / "w" / "summary.json").read_text())
        client = MlflowClient(uri)
        runs = [first["mlflow_run_id"], *first["member_runs"].values()]
        for run_id in runs:
            client.update_run(run_id, status="RUNNING")
        assert sweep_experiment.main(args) == 0
    again = json.loads((tmp_path / "w" / "summary.json").read_text())
    assert again["mlflow_run_id"] == first["mlflow_run_id"] and again["member_runs"] == first["member_runs"]
    assert {client.get_run(r).info.status for r in runs} == {"FINISHED"}
    for key in ("best_member", "ensemble"):
        assert again["models"][key]["model_version"] == first["models"][key]["model_version"]
    assert len(client.search_model_versions(f"name='{MODEL}'")) == 2
    for child in first["member_runs"].values():
        assert len(client.get_metric_history(child, "best_val_loss")) == 1
    assert len(client.get_metric_history(first["mlflow_run_id"], "ensemble_val_loss")) == 1


def test_a_sweep_where_no_member_beats_a_trivial_model_registers_nothing(tmp_path, mlflow_db, capsys):
    from mlflow.tracking import MlflowClient

    csv = write_tiny_csv(tmp_path / "tiny.csv")
    uri = mlflow_db(tmp_path)
    with pytest.MonkeyPatch.context() as mp:
        use_store(mp, tmp_path, uri)
        mp.setattr(S, "trivial_val_loss", lambda config, dataset: 0.0)  # as if every member had diverged
        assert sweep_experiment.main(_args(csv, tmp_path / "w", **{"model.hidden_sizes": "8"})) == 0
    out = capsys.readouterr().out
    assert (
        "no member beat predicting the training class frequencies (0): the best member is saved but not registered"
        in out
    )
    assert (
        "no ensemble saved: the best member's program (hidden sizes, batch size, ...) has 0 finite member(s) better than a trivial model"
        in out
    )
    summary = json.loads((tmp_path / "w" / "summary.json").read_text())
    assert summary["ensemble"]["no_better_than_trivial"] is True and "ensemble" not in summary["models"]
    assert "model_version" not in summary["models"]["best_member"]
    assert MlflowClient(uri).search_model_versions(f"name='{MODEL}'") == []


def test_a_top_k_larger_than_the_program_saves_and_names_what_it_holds(tmp_path, capsys):
    csv = write_tiny_csv(tmp_path / "tiny.csv")
    args = _args(csv, tmp_path / "w", **{"sweep.ensemble_top_k": "8", "tracking.enabled": "false"})
    assert sweep_experiment.main(args) == 0
    summary = json.loads((tmp_path / "w" / "summary.json").read_text())
    assert len(summary["models"]["ensemble"]["members"]) == 4
    assert (tmp_path / "w" / "ensemble-top4").is_dir() and not (tmp_path / "w" / "ensemble-top8").exists()
    assert "sweep.ensemble_top_k=8, but the best member's program has 4 finite member(s)" in capsys.readouterr().out


def test_the_compared_ensemble_is_the_saved_one_when_members_span_programs(tmp_path):
    csv = write_tiny_csv(tmp_path / "tiny.csv")
    over = {"sweep.model.hidden_sizes": "16,8/8", "sweep.seed": "0", "tracking.enabled": "false"}
    assert sweep_experiment.main(_args(csv, tmp_path / "w", **over)) == 0
    summary = json.loads((tmp_path / "w" / "summary.json").read_text())
    saved = summary["models"]["ensemble"]["members"]
    groups = {r["member"]: r["group"] for r in summary["members"]}
    assert len(set(groups.values())) == 2 and len({groups[i] for i in saved}) == 1
    assert summary["ensemble"]["top"] == saved  # what is printed and recorded is what is saved
