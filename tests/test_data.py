from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlp_jax import config as C
from mlp_jax import data as D
from tests.helpers import write_tiny_csv


def _frame(n=60, seed=0):
    rng = np.random.default_rng(seed)
    f = pd.DataFrame(rng.normal(size=(n, 3)), columns=["a", "b", "c"])
    f["label"] = np.where(f["a"] > 0, "yes", "no")
    return f


def test_synthetic_is_deterministic_and_has_target():
    cfg = C.DataConfig(n_samples=200)
    a, b = D.make_synthetic(cfg), D.make_synthetic(cfg)
    pd.testing.assert_frame_equal(a, b)
    assert list(a.columns) == [f"feature_{i}" for i in range(20)] + ["target"]
    assert set(a["target"]) == {0, 1}


def test_data_command_writes_csv(tmp_path):
    out = tmp_path / "d.csv"
    assert D.main(["--out", str(out), "data.n_samples=100", "data.n_classes=3"]) == 0
    frame = pd.read_csv(out)
    assert frame.shape == (100, 21) and set(frame["target"]) == {0, 1, 2}


def test_string_labels_kept_in_order_and_split_is_stratified(tmp_path):
    path = tmp_path / "s.csv"
    _frame(400).to_csv(path, index=False)
    ds = D.prepare(C.DataConfig(path=str(path), target="label"), seed=0)
    assert ds.classes == ("no", "yes")
    assert ds.feature_names == ("a", "b", "c")
    sizes = ds.split_sizes()
    assert sizes == {"train": 280, "val": 60, "test": 60}
    frac = [np.mean(y) for y in (ds.y_train, ds.y_val, ds.y_test)]
    assert max(frac) - min(frac) < 0.03  # stratified
    # standardiser fitted on the training split only
    np.testing.assert_allclose(ds.x_train.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(ds.x_train.std(axis=0), 1, atol=1e-4)
    assert abs(ds.x_test.mean()) > 1e-6


def test_split_is_seeded(tiny_csv):
    cfg = C.DataConfig(path=str(tiny_csv))
    a, b, c = D.prepare(cfg, 0), D.prepare(cfg, 0), D.prepare(cfg, 1)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    assert not np.array_equal(a.x_train, c.x_train)


@pytest.mark.parametrize(
    ("make", "target", "message"),
    [
        (lambda p: None, "label", "data file not found"),
        (lambda p: p.write_text(""), "label", "data file is empty"),
        (lambda p: p.write_text("a,b,label\n"), "label", "0 data rows"),
        (lambda p: _frame().to_csv(p, index=False), "nope", "target column 'nope' not found"),
        (lambda p: _frame().assign(b=["x"] * 60).to_csv(p, index=False), "label", "must be numeric, not: b"),
        (
            lambda p: _frame().assign(c=[np.nan] + [1.0] * 59).to_csv(p, index=False),
            "label",
            "missing values in feature column(s): c (1 rows)",
        ),
        (lambda p: _frame().assign(label="same").to_csv(p, index=False), "label", "has 1 class(es)"),
        (
            lambda p: _frame().assign(label=[None] * 2 + ["a"] * 58).to_csv(p, index=False),
            "label",
            "2 missing value(s)",
        ),
        (lambda p: _frame()[["label"]].to_csv(p, index=False), "label", "no feature columns"),
        (lambda p: _frame(5).assign(label=list("aabbb")).to_csv(p, index=False), "label", "too few rows"),
    ],
)
def test_bad_csv_is_refused_with_a_named_problem(tmp_path, make, target, message):
    path = tmp_path / "bad.csv"
    make(path)
    with pytest.raises(D.DataError) as info:
        D.prepare(C.DataConfig(path=str(path), target=target), seed=0)
    assert message in str(info.value)


def test_synthetic_generated_only_at_default_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = C.DataConfig(n_samples=50)
    assert D.ensure_synthetic(cfg) is True
    assert Path(C.SYNTHETIC_PATH).exists()
    assert D.ensure_synthetic(cfg) is False
    with pytest.raises(D.DataError, match="not found"):
        D.prepare(C.DataConfig(path="typo.csv"), 0)
    assert not Path("typo.csv").exists()


def test_float_integer_labels_become_ints(tmp_path):
    path = write_tiny_csv(tmp_path / "t.csv")
    frame = pd.read_csv(path)
    frame["target"] = frame["target"].astype(float)
    frame.to_csv(path, index=False)
    assert D.prepare(C.DataConfig(path=str(path)), 0).classes == (0, 1)
