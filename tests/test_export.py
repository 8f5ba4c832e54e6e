"""Portable artifacts (mlp_jax/export.py): the exported program and the ONNX graph give the
checkpoint's numbers, a predictor runs from the folder alone, and every entry point takes it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import jax
import numpy as np
import pandas as pd
import pytest

from mlp_jax import artifact, export
from mlp_jax.export import ExportedPredictor, load_predictor
from mlp_jax.predictor import Predictor
from tests.helpers import penguins_csv, trained_penguins, trained_regression, write_regression_csv

pytestmark = pytest.mark.slow  # end to end: trains, exports StableHLO and ONNX, runs onnxruntime

PROBS_TOL = 1e-6  # ExportedPredictor vs Predictor (the bound; measured: bitwise equal)
ONNX_TOL = 1e-5  # onnxruntime vs the JAX program


def _case(workdir: Path, out: Path, drop: list[str]) -> SimpleNamespace:
    loaded = artifact.load(workdir)
    paths = export.export_artifact(loaded, out)
    frame = pd.read_csv(loaded.meta.data.source).drop(columns=drop)
    return SimpleNamespace(
        folder=out,
        paths=paths,
        reference=Predictor.load(workdir),
        exported=load_predictor(out),
        frame=frame,
        meta=loaded.meta,
    )


def _ensemble(folder: Path, csv: Path, target: str, task: str, k: int = 3) -> Path:
    """A deep ensemble artifact: k seeds trained as one sweep program, all k members saved."""
    from mlp_jax import config, data, sweep

    cfg = config.apply_overrides(
        config.Config(),
        [
            f"data.path={csv}",
            f"data.target={target}",
            f"data.task={task}",
            "model.hidden_sizes=16,8",
            "train.epochs=3",
            "train.progress=false",
            "tracking.enabled=false",
            "sweep.seed=" + ",".join(map(str, range(k))),
        ],
    )
    ds = data.prepare(cfg.data, cfg.seed)
    return sweep.save_artifact(sweep.run_sweep(cfg, ds), list(range(k)), ds, folder, cfg)


@pytest.fixture(scope="module")
def cases(tmp_path_factory, trained_workdir) -> dict[str, SimpleNamespace]:
    out = tmp_path_factory.mktemp("exported")
    reg_csv = write_regression_csv(out / "regression.csv")
    return {
        "tiny": _case(trained_workdir, out / "tiny", ["target"]),
        "penguins": _case(trained_penguins(tmp_path_factory), out / "penguins", ["species"]),
        "regression": _case(trained_regression(tmp_path_factory), out / "regression", ["y1", "y2"]),
        # ensembles (members' means then standard deviations): embeddings / one-hot per member, gaps, two targets
        "penguins-ensemble": _case(
            _ensemble(out / "pe", penguins_csv(), "species", "classification"), out / "penguins-ens", ["species"]
        ),
        "regression-ensemble": _case(
            _ensemble(out / "re", reg_csv, "y1,y2", "regression"), out / "regression-ens", ["y1", "y2"]
        ),
    }


MODELS = ["tiny", "penguins", "regression", "penguins-ensemble", "regression-ensemble"]


def _width(c: SimpleNamespace) -> int:
    """Output columns of the program: one per class / target, twice that for an ensemble (+ spread)."""
    return c.meta.n_outputs * (2 if c.meta.members > 1 else 1)


def _assert_close(got: np.ndarray, want: np.ndarray, tol: float) -> None:
    """Absolute for probabilities; relative for regression values in their units (y1 is ~100)."""
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


def test_the_folder_holds_the_program_onnx_and_the_metadata(cases):
    c = cases["penguins"]
    assert {p.name for p in c.folder.iterdir()} == {"forward.stablehlo", "model.onnx", "meta.json", "signature.json"}
    assert artifact.ArtifactMeta.from_json((c.folder / "meta.json").read_text()) == c.meta
    sig = json.loads((c.folder / "signature.json").read_text())
    assert sig["input"]["dtype"] == "float64" and sig["input"]["shape"] == [-1, 7]
    island = next(col for col in sig["input"]["columns"] if col["name"] == "island")
    assert island["role"] == "categorical" and island["vocabulary"] == ["Biscoe", "Dream", "Torgersen"]
    assert sig["output"] == {
        "name": "probabilities",
        "dtype": "float32",
        "shape": [-1, 3],
        "columns": ["Adelie", "Chinstrap", "Gentoo"],
    }
    (aval,) = jax.export.deserialize(bytearray((c.folder / "forward.stablehlo").read_bytes())).in_avals
    assert str(aval.shape[0]) == "b"


@pytest.mark.parametrize("model", MODELS)
def test_exported_predictor_gives_the_checkpoints_predictions(cases, model):
    c = cases[model]
    assert isinstance(c.exported, ExportedPredictor) and type(c.reference) is Predictor
    _assert_close(c.exported.predict_outputs(c.frame), c.reference.predict_outputs(c.frame), PROBS_TOL)
    got, want = c.exported.predict_frame(c.frame), c.reference.predict_frame(c.frame)
    assert list(got.columns) == list(want.columns)
    if c.meta.task == "classification":
        assert got["prediction"].tolist() == want["prediction"].tolist()
    d = c.exported.describe()
    assert d["exported"] and d["checkpoint"] == str(c.folder.resolve()) and d["step"] == c.reference.step
    assert d["members"] == c.meta.members and c.exported.output_columns() == c.reference.output_columns()
    sig = json.loads((c.folder / "signature.json").read_text())
    assert sig["members"] == c.meta.members and sig["output"]["shape"] == [-1, _width(c)]
    assert len(sig["output"]["columns"]) == _width(c)


def test_records_nulls_unseen_categories_and_positional_rows(cases):
    pg = cases["penguins"]
    row = pg.frame.iloc[0].to_dict()
    odd = [{**row, "island": "Atlantis", "sex": None, "bill_depth_mm": None}, row]
    _assert_close(pg.exported.predict_outputs(odd), pg.reference.predict_outputs(odd), PROBS_TOL)
    _, unknown = pg.exported.encode_counted(odd)
    assert unknown == {"island": 1, "sex": 0}
    tiny = cases["tiny"]
    rows = tiny.frame.to_numpy()[:9].tolist()
    rows[2][1] = None  # imputed, as in training
    _assert_close(tiny.exported.predict_outputs(rows), tiny.reference.predict_outputs(rows), PROBS_TOL)


def test_a_predictor_is_built_from_the_folder_alone(cases, tmp_path, monkeypatch):
    """No checkpoint, no Orbax, no Flax network code: only the copied folder."""
    c = cases["penguins"]
    folder = shutil.copytree(c.folder, tmp_path / "copy")
    want = c.reference.predict_outputs(c.frame)

    def forbidden(*args, **kwargs):
        raise AssertionError("the exported predictor must not use the checkpoint or the network code")

    import orbax.checkpoint as ocp

    from mlp_jax import model as model_lib

    monkeypatch.setattr(artifact, "load", forbidden)
    monkeypatch.setattr(ocp, "CheckpointManager", forbidden)
    monkeypatch.setattr(model_lib, "apply", forbidden)
    monkeypatch.setattr(model_lib.MLP, "__call__", forbidden)
    p = ExportedPredictor(folder, buckets=(1, 64))
    _assert_close(p.predict_outputs(c.frame), want, PROBS_TOL)


@pytest.mark.parametrize("n", [1, 7, 4096])
def test_the_program_takes_any_batch_size(cases, n):
    c = cases["regression"]
    exp = jax.export.deserialize(bytearray((c.folder / "forward.stablehlo").read_bytes()))
    frame = c.frame.sample(n, replace=True, random_state=n)
    raw = c.exported.encode(frame)
    with jax.enable_x64(True):
        out = np.asarray(exp.call(raw))
    assert out.shape == (n, 2) and out.dtype == np.float64
    _assert_close(out, c.reference.predict_outputs(frame), PROBS_TOL)


def _raw_10k(c: SimpleNamespace, seed: int) -> np.ndarray:
    """10,000 program inputs: real rows, numbers perturbed and 10% missing, every category code."""
    rng = np.random.default_rng(seed)
    raw = c.exported.encode(c.frame.sample(10_000, replace=True, random_state=seed))
    for j, s in enumerate(c.exported.preprocessor.columns):
        if s.role == "numeric":
            spread = s.scale if s.scale > 0 else 1.0
            raw[:, j] += rng.normal(size=len(raw)) * spread
            raw[rng.random(len(raw)) < 0.1, j] = np.nan
        elif s.role == "boolean":
            raw[:, j] = rng.choice([0.0, 1.0, np.nan], size=len(raw))
        else:
            raw[:, j] = rng.integers(0, s.cardinality, size=len(raw))
    return raw


@pytest.mark.parametrize("model", MODELS)
def test_onnx_in_onnxruntime_matches_on_10000_rows(cases, model):
    ort = pytest.importorskip("onnxruntime", reason="the onnx extra is not installed (pip install mlp-jax[onnx])")
    c = cases[model]
    raw = _raw_10k(c, seed=len(model))
    session = ort.InferenceSession(str(c.folder / "model.onnx"), providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    assert inp.name == "raw" and inp.type == "tensor(double)" and inp.shape[1] == c.exported.n_features
    got = session.run(None, {"raw": raw})[0]
    want = c.exported.run_encoded(raw)
    assert got.shape == want.shape == (10_000, _width(c)) and got.dtype == want.dtype
    _assert_close(got, want, ONNX_TOL)
    if c.meta.task == "classification":  # and the checkpoint agrees on the same rows
        x = np.stack([c.exported.encode(c.frame.iloc[:50]), c.exported.encode(c.frame.iloc[50:100])]).reshape(100, -1)
        _assert_close(session.run(None, {"raw": x})[0], c.reference.predict_outputs(c.frame.iloc[:100]), ONNX_TOL)


def test_the_service_and_the_batch_command_take_the_exported_folder(cases, tmp_path):
    from litestar.testing import TestClient

    from mlp_jax import predict, serve

    c = cases["penguins"]
    records = json.loads(c.frame.iloc[:20].to_json(orient="records"))
    answers = []
    for model in (c.reference, str(c.folder)):
        with TestClient(serve.create_app(model)) as client:
            r = client.post("/predict", json={"instances": records})
            assert r.status_code == 200, r.text
            answers.append(r.json())
            assert client.get("/ready").status_code == 200
    assert answers[0]["predictions"] == answers[1]["predictions"]
    _assert_close(np.asarray(answers[1]["probabilities"]), np.asarray(answers[0]["probabilities"]), PROBS_TOL)

    outs = []
    for model in (c.reference.checkpoint.path, c.folder):
        dst = tmp_path / f"out-{len(outs)}.csv"
        assert (
            predict.main(["--model", str(model), "--input", str(penguins_csv()), "--output", str(dst), "--no-progress"])
            == 0
        )
        outs.append(pd.read_csv(dst))
    assert outs[0]["prediction"].tolist() == outs[1]["prediction"].tolist()
    proba = c.reference.probability_columns()
    _assert_close(outs[1][proba].to_numpy(), outs[0][proba].to_numpy(), PROBS_TOL)


@pytest.mark.parametrize("model", ["tiny", "penguins", "regression-ensemble"])  # all-numeric, text+gaps, ensemble
def test_one_row_requests_to_an_exported_folder_match_the_checkpoint(cases, model):
    """One named record (and, for an all-numeric model, one positional row) takes the service's
    one-record path: on an exported folder that path must encode raw columns, not the model matrix."""
    from litestar.testing import TestClient

    from mlp_jax import serve

    c = cases[model]
    rows = c.frame.iloc[:3]
    bodies = [{"features": r} for r in json.loads(rows.to_json(orient="records"))]
    if c.reference.positional:
        bodies += [{"features": list(r)} for r in rows.astype(float).to_numpy().tolist()]
    want = c.reference.predict_outputs(rows)
    with TestClient(serve.create_app(str(c.folder))) as client:
        for i, body in enumerate(bodies):
            r = client.post("/predict", json=body)
            assert r.status_code == 200, r.text
            got = r.json()
            value = got["probabilities"] if "probabilities" in got else got["prediction"]
            _assert_close(np.atleast_1d(np.asarray(value, np.float64)), c.reference.split(want)[0][i % 3], PROBS_TOL)


def test_cli_exports_a_workdir_and_refuses_a_non_checkpoint(cases, tmp_path, capsys):
    workdir = cases["tiny"].reference.checkpoint.path.parent
    assert export.main(["--model", str(workdir), "--out", str(tmp_path / "out"), "--no-onnx"]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["forward.stablehlo", "meta.json", "signature.json"]
    assert "stablehlo" in capsys.readouterr().out
    assert export.main(["--model", str(tmp_path / "nothing"), "--out", str(tmp_path / "x")]) == 2
    assert "cannot export" in capsys.readouterr().err


@pytest.mark.slow
def test_a_logged_mlflow_model_carries_the_exported_folder(cases, tmp_path, monkeypatch, mlflow_db):
    mlflow = pytest.importorskip("mlflow")
    from mlp_jax import pyfunc
    from tests.helpers import use_store

    use_store(monkeypatch, tmp_path, mlflow_db(tmp_path))
    c = cases["tiny"]
    with mlflow.start_run():
        info = pyfunc.log_model(c.reference.checkpoint.path)
    local = Path(mlflow.artifacts.download_artifacts(info.model_uri, dst_path=str(tmp_path / "dl")))
    exported = next(local.rglob("forward.stablehlo")).parent
    assert exported.name == "exported" and (exported / "model.onnx").is_file()
    _assert_close(load_predictor(exported).predict_outputs(c.frame), c.reference.predict_outputs(c.frame), PROBS_TOL)


def test_bad_out_is_a_one_line_error_and_a_re_export_replaces_the_folder(
    trained_workdir, tmp_path, capsys, monkeypatch
):
    """--out a file, a path under a file or a folder of other files: one `error:` line naming the path,
    exit 2, nothing written. An earlier export is replaced as a whole (no stale model.onnx), and a
    failed export leaves it, and the folders around it, as they were."""
    pytest.importorskip("onnx")
    model = str(trained_workdir)
    table = tmp_path / "somefile.csv"
    table.write_text("a,b\n1,2\n")
    others = tmp_path / "mine"
    others.mkdir()
    (others / "notes.txt").write_text("keep me")
    for out, said in (
        (table, "it is a file, not a folder"),
        (table / "sub", f"{table} is a file, not a folder"),
        (others, "the folder holds files that are not an export (notes.txt)"),
    ):
        assert export.main(["--model", model, "--out", str(out)]) == 2
        captured = capsys.readouterr()
        assert captured.err.startswith(f"error: cannot export to {out}: {said}")
        assert captured.err.count("\n") == 1 and "Traceback" not in captured.err
    assert table.read_text() == "a,b\n1,2\n" and [p.name for p in others.iterdir()] == ["notes.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "somefile.csv"]

    out = tmp_path / "new" / "deep" / "out"  # parents are created
    assert export.main(["--model", model, "--out", str(out), "--onnx"]) == 0
    assert (out / "model.onnx").is_file()
    assert export.main(["--model", model, "--out", str(out), "--no-onnx"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["forward.stablehlo", "meta.json", "signature.json"]
    assert json.loads((out / "signature.json").read_text())["files"]["onnx"] is None
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(export, "signature", broken)  # fails half-way through writing
    assert export.main(["--model", model, "--out", str(out), "--onnx"]) == 2
    assert "error: cannot write --out" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the old export, untouched
    assert sorted(p.name for p in out.parent.iterdir()) == ["out"]  # no temporary sibling left
    with pytest.raises(OSError):
        export.export_artifact(artifact.load(trained_workdir), tmp_path / "fresh" / "a" / "out")
    assert not (tmp_path / "fresh").exists()  # the parents it made are removed again
