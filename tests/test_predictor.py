"""The predictor: restore, the training preprocessing, AOT buckets, batch-invariant numbers, input checks,
real tables (penguins: text, missing values, unseen categories) and regression."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from mlp_jax import artifact, data, evaluate, features
from mlp_jax.predictor import ROW_TILE, Predictor, PredictorError
from tests.helpers import count_compilations, penguins_csv, trained_penguins, trained_regression


@pytest.fixture(scope="module")
def predictor(trained_workdir: Path) -> Predictor:
    return Predictor.load(trained_workdir)


@pytest.fixture(scope="module")
def rows(predictor: Predictor) -> np.ndarray:
    rng = np.random.default_rng(7)
    specs = predictor.preprocessor.columns
    mean = np.asarray([s.center for s in specs], np.float32)
    scale = np.asarray([s.scale for s in specs], np.float32)
    return (mean + scale * rng.normal(size=(5000, predictor.n_features))).astype(np.float32)


def test_loads_workdir_and_step_folder_with_metadata(predictor, trained_workdir):
    workdir, step = artifact.resolve(trained_workdir)
    by_step = Predictor.load(workdir / str(step), buckets=(1,))
    assert predictor.step == by_step.step == step
    assert predictor.feature_names == tuple(f"feature_{i}" for i in range(6))
    assert predictor.classes == (0, 1)
    d = predictor.describe()
    assert d["name"] == "tiny" and d["version"] == f"step-{step}" and d["n_features"] == 6
    assert d["checkpoint"] == str(workdir / str(step)) and d["metrics"]
    assert by_step.buckets == (ROW_TILE,)  # rounded up to one tile


def test_applies_exactly_the_training_preprocessing(predictor, rows):
    """Same as the training path: the fitted Preprocessor on the host, then the model on its matrix."""
    ckpt = predictor.checkpoint
    pre = features.Preprocessor.from_dict(ckpt.meta.preprocessing)
    frame = pd.DataFrame(rows[:300].astype(np.float64), columns=list(predictor.feature_names))
    matrix = pre.transform(frame).x
    assert np.array_equal(predictor.encode(rows[:300]), matrix)  # the vectorised numeric path: same bits
    assert np.array_equal(predictor.encode(frame), matrix)
    reference = evaluate.batched_probabilities(ckpt.graphdef, ckpt.params, matrix)
    got = predictor.predict_proba(rows[:300])
    np.testing.assert_allclose(got, reference, rtol=1e-6, atol=1e-7)
    assert got.dtype == np.float32 and got.shape == (300, 2)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, rtol=1e-6)


def test_a_row_gets_the_same_bits_whatever_else_is_in_its_batch(predictor, rows):
    """Every bucket runs the same tile shape, so batch composition never changes a result."""
    whole = predictor.predict_proba(rows)  # 5000 rows: two 4096-chunks' worth, padded
    one_by_one = np.concatenate([predictor.predict_proba(rows[i]) for i in range(40)])
    assert np.array_equal(one_by_one, whole[:40])
    for start, size in ((0, 7), (3, 33), (100, 256), (900, 1500)):
        assert np.array_equal(predictor.predict_proba(rows[start : start + size]), whole[start : start + size])


def test_labels_are_the_original_classes(predictor, rows):
    labels, probs = predictor.predict(rows[:50])
    assert labels == [predictor.classes[i] for i in probs.argmax(axis=1)]
    assert set(labels) <= set(predictor.classes)


def test_no_prediction_compiles_and_compiled_buckets_refuse_other_shapes(predictor, rows):
    with count_compilations() as events:
        for n in (1, 2, 31, 32, 33, 255, 256, 257, 1000, 4096, 4097):
            predictor.predict_proba(rows[:n])
    assert events == []
    # The listener does see a compilation when one happens (so the assertion above can fail).
    with count_compilations() as events:
        jax.jit(lambda x: x * 3 + 1).lower(jax.ShapeDtypeStruct((3, 5), jnp.float32)).compile()
    assert events
    # An AOT executable never recompiles: a shape outside its bucket raises.
    compiled = predictor._compiled[predictor.buckets[0]]
    with pytest.raises(TypeError):
        compiled(*predictor._args, np.zeros((5, predictor.n_features), np.float32))


def test_predict_frame_selects_columns_by_name(predictor, rows):
    names = list(predictor.feature_names)
    frame = pd.DataFrame(rows[:20], columns=names)
    shuffled = frame[names[::-1]].assign(id=range(20))
    out = predictor.predict_frame(shuffled)
    assert list(out.columns) == ["prediction", "proba_0", "proba_1"]
    np.testing.assert_array_equal(out[["proba_0", "proba_1"]].to_numpy(), predictor.predict_proba(rows[:20]))
    with pytest.raises(PredictorError, match=r"missing feature column.*feature_2, feature_4") as e:
        predictor.predict_frame(frame.drop(columns=["feature_2", "feature_4"]))
    assert e.value.column == "feature_2"


def test_missing_numbers_are_imputed_like_training(predictor, rows):
    """None/NaN take the training median (what the Preprocessor does), in positional rows and records."""
    pre = predictor.preprocessor
    with_gap = rows[:3].astype(np.float64)
    with_gap[1, 2] = np.nan
    filled = with_gap.copy()
    filled[1, 2] = pre.columns[2].fill
    assert np.array_equal(predictor.encode(with_gap), predictor.encode(filled))
    as_lists = with_gap.tolist()
    as_lists[1][2] = None
    assert np.array_equal(predictor.encode(as_lists), predictor.encode(filled))
    records = [dict(zip(predictor.feature_names, r, strict=True)) for r in as_lists]
    assert np.array_equal(predictor.encode(records), predictor.encode(filled))


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ([[0.0] * 5], "expected 6 features per row, got 5"),
        ([[0.0] * 6, [0.0] * 7], "expected 6 features per row, got 7 in row 1"),
        ([[0.0] * 6, [0.0, "x", 0.0, 0.0, 0.0, 0.0]], "column 'feature_1', row 1: expected a number, got 'x'"),
        ([[0.0, 0.0, float("inf"), 0.0, 0.0, 0.0]], "column 'feature_2', row 0: non-finite"),
        (np.zeros((0, 6)), "expected at least one row, got 0"),
        (np.zeros((2, 3, 6)), "expected a 2-D batch of rows, got an array of rank 3"),
        (np.array([["a"] * 6]), "rows must be real numbers, got an array of dtype <U1"),
    ],
)
def test_bad_rows_are_refused_with_the_problem_named(predictor, bad, message):
    with pytest.raises(PredictorError, match=message):
        predictor.predict_proba(bad)


def test_bad_model_paths_and_buckets(tmp_path, trained_workdir):
    with pytest.raises(artifact.CheckpointError, match="does not exist"):
        Predictor.load(tmp_path / "missing")
    with pytest.raises(artifact.CheckpointError, match="not a checkpoint"):
        Predictor.load(tmp_path)
    with pytest.raises(ValueError, match="buckets must be positive"):
        Predictor.load(trained_workdir, buckets=(0, 8))


# ----------------------------------------------------------------------------- real tables


@pytest.fixture(scope="module")
def penguins(tmp_path_factory) -> Predictor:
    return Predictor.load(trained_penguins(tmp_path_factory), buckets=(32, 256))


@pytest.fixture(scope="module")
def penguin_frame() -> pd.DataFrame:
    return data.read_table(penguins_csv())


def penguin_records(frame: pd.DataFrame, names) -> list[dict]:
    """JSON-like records: None for missing, Python numbers and text."""
    out = []
    for r in frame[list(names)].astype(object).to_dict("records"):
        out.append(
            {k: None if v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v)) else v for k, v in r.items()}
        )
    return out


def test_penguins_metadata_roles_and_outputs(penguins):
    assert penguins.task == "classification" and penguins.targets == ()
    assert penguins.classes == ("Adelie", "Chinstrap", "Gentoo")
    assert penguins.n_features == 7 and penguins.n_inputs == penguins.meta.network.in_features
    roles = {r["name"]: r for r in penguins.describe()["input_columns"]}
    assert roles["island"]["role"] == "categorical" and roles["island"]["dtype"] == "string"
    assert roles["bill_length_mm"] == {"name": "bill_length_mm", "role": "numeric", "dtype": "double", "nullable": True}
    assert penguins.output_columns() == ["prediction", "proba_Adelie", "proba_Chinstrap", "proba_Gentoo"]
    assert not penguins.positional


def test_a_named_record_with_a_null_and_an_unseen_island_is_scored(penguins):
    record = {
        "island": "Atlantis",  # never seen in training: the unknown slot, counted
        "bill_length_mm": None,  # missing: the training median + indicator
        "bill_depth_mm": 18.1,
        "flipper_length_mm": 190,
        "body_mass_g": 3700,
        "sex": None,
        "year": 2008,
    }
    counts: dict[str, int] = {}
    x = penguins.encode([record], unknown_counts=counts)
    assert x.dtype == np.float32 and x.shape == (1, penguins.n_inputs)
    assert counts == {"island": 1, "sex": 0}
    out = penguins.format(penguins.run_encoded(x))
    assert len(out) == 1 and out[0]["prediction"] in penguins.classes
    assert set(out[0]["probabilities"]) == {"Adelie", "Chinstrap", "Gentoo"}
    assert sum(out[0]["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    # text numbers (a CSV body) and the null tokens give the same matrix as the typed record
    text = {**record, "bill_length_mm": "NA", "bill_depth_mm": "18.1", "flipper_length_mm": "190", "sex": ""}
    same, text_counts = penguins.encode_counted([text])
    assert np.array_equal(same, x) and text_counts == counts


def test_records_frames_and_the_preprocessor_agree_bit_for_bit(penguins, penguin_frame):
    """The pandas-free record path, the DataFrame path and Preprocessor.transform give the same matrix."""
    pre = features.Preprocessor.from_dict(penguins.meta.preprocessing)
    want = pre.transform(penguin_frame)
    records = penguin_records(penguin_frame, penguins.feature_names)
    records[5]["island"] = "Atlantis"
    assert np.array_equal(penguins.encode(penguin_frame), want.x)
    got, counts = penguins.encode_counted(records[:200])
    ref = pre.transform(pd.DataFrame(records[:200], dtype=object))
    assert np.array_equal(got, ref.x) and counts == ref.unknown_counts == {"island": 1, "sex": 0}
    shuffled = penguin_frame[list(penguin_frame.columns)[::-1]]
    out = penguins.predict_frame(shuffled)
    assert list(out.columns) == penguins.output_columns() and out.index.equals(shuffled.index)
    assert np.array_equal(out.iloc[:, 1:].to_numpy(), penguins.predict_outputs(penguin_frame))
    accuracy = (out["prediction"] == penguin_frame["species"]).mean()
    assert accuracy > 0.6


@pytest.mark.parametrize(
    ("change", "message", "column", "row"),
    [
        (
            lambda rs: rs[2].update(bill_depth_mm="deep"),
            r"column 'bill_depth_mm', row 2: expected a number, got 'deep'",
            "bill_depth_mm",
            2,
        ),
        (lambda rs: rs[1].pop("sex"), r"row 1: missing column\(s\) 'sex'", "sex", 1),
        (lambda rs: rs[0].update(colour="blue"), r"row 0: unknown column\(s\) 'colour'", "colour", 0),
        (lambda rs: rs[2].update(year=float("inf")), r"column 'year', row 2: non-finite", "year", 2),
    ],
)
def test_bad_records_name_the_column_and_the_row(penguins, penguin_frame, change, message, column, row):
    records = penguin_records(penguin_frame.head(3), penguins.feature_names)
    change(records)
    with pytest.raises(PredictorError, match=message) as e:
        penguins.encode(records)
    assert (e.value.column, e.value.row) == (column, row)


def test_positional_rows_need_an_all_numeric_model(penguins, penguin_frame):
    with pytest.raises(PredictorError, match="positional rows need every input column to be numeric"):
        penguins.encode([[1.0] * 7])
    with pytest.raises(PredictorError, match=r"missing feature column\(s\): island"):
        penguins.predict_frame(penguin_frame.drop(columns=["island"]))


@pytest.mark.slow
def test_regression_outputs_are_in_original_units(tmp_path_factory):
    workdir = trained_regression(tmp_path_factory)
    reg = Predictor.load(workdir, buckets=(32,))
    assert reg.task == "regression" and reg.targets == ("y1", "y2") and reg.classes == ()
    assert reg.output_columns() == ["prediction_y1", "prediction_y2"]
    frame = data.read_table(workdir.parent.parent / "regression.csv")
    ckpt = reg.checkpoint
    x = features.Preprocessor.from_dict(ckpt.meta.preprocessing).transform(frame).x
    raw = np.asarray(evaluate.batched_outputs(ckpt.graphdef, ckpt.params, x))
    stats = ckpt.meta.target_stats
    want = raw.astype(np.float64) * np.asarray(stats["scale"]) + np.asarray(stats["mean"])
    got = reg.predict_outputs(frame)
    assert got.dtype == np.float64 and got.shape == (len(frame), 2)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
    out = reg.predict_frame(frame.head(4))
    assert list(out.columns) == ["prediction_y1", "prediction_y2"] and (out.dtypes == np.float64).all()
    rows = reg.format(got[:2])
    assert rows == [{"prediction": list(map(float, got[0]))}, {"prediction": list(map(float, got[1]))}]
    assert abs(got[:, 0] - frame["y1"]).mean() < frame["y1"].std()  # it learned something
    with pytest.raises(PredictorError, match="regression model"):
        reg.predict_proba(frame)


@pytest.mark.parametrize(
    ("classes", "dtype", "first"),
    [((False, True), bool, True), ((3, 7), np.int64, 7), (("007", "010"), object, "010")],
)
def test_labels_keep_their_trained_type(classes, dtype, first):
    """Booleans stay booleans, integers integers, "007" stays text (not 7)."""
    from types import SimpleNamespace

    probs = np.asarray([[0.2, 0.8], [0.9, 0.1]], np.float32)
    labels = Predictor.label_array(SimpleNamespace(classes=classes), probs)
    assert labels.dtype == dtype and labels[0] == first and labels[1] == classes[0]
    assert type(labels.tolist()[0]) is type(classes[0])
