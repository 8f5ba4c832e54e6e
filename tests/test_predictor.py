"""The predictor: restore, training standardisation, AOT buckets, batch-invariant numbers, input checks."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from mlp_jax import artifact, data, evaluate
from mlp_jax.predictor import ROW_TILE, Predictor, PredictorError
from tests.helpers import count_compilations


@pytest.fixture(scope="module")
def predictor(trained_workdir: Path) -> Predictor:
    return Predictor.load(trained_workdir)


@pytest.fixture(scope="module")
def rows(predictor: Predictor) -> np.ndarray:
    rng = np.random.default_rng(7)
    mean = np.asarray(predictor.meta.preprocessing["mean"], np.float32)
    scale = np.asarray(predictor.meta.preprocessing["scale"], np.float32)
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


def test_applies_exactly_the_training_standardisation(predictor, rows):
    """Same as the training path: the numpy standardiser, then the model on standardised rows."""
    ckpt = predictor.checkpoint
    scaler = data.Standardizer.from_dict(ckpt.meta.preprocessing)
    reference = evaluate.batched_probabilities(ckpt.graphdef, ckpt.params, scaler.transform(rows[:300]))
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
    with pytest.raises(PredictorError, match=r"missing feature column.*feature_2, feature_4"):
        predictor.predict_frame(frame.drop(columns=["feature_2", "feature_4"]))


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ([[0.0] * 5], "expected 6 features per row, got 5"),
        ([[0.0] * 6, [0.0] * 7], "expected 6 features per row, got 7 in row 1"),
        ([[0.0] * 6, [0.0, "x", 0.0, 0.0, 0.0, 0.0]], "row 1, feature 'feature_1': expected a number, got 'x'"),
        ([[0.0, 0.0, float("nan"), 0.0, 0.0, 0.0]], "non-finite.*row 0, feature 'feature_2'"),
        ([[0.0] * 5 + [1e39]], "non-finite.*beyond float32.*feature_5"),
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
