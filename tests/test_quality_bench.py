"""Smoke test of the quality benchmark: one seed, tiny tables, few epochs."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks import quality, quality_tables


def test_splits_are_disjoint_stratified_and_repeatable():
    spec = quality_tables.iris()
    tr, va, te = quality.split_indices(spec, 0)
    assert len(set(tr) | set(va) | set(te)) == len(spec.frame) == len(tr) + len(va) + len(te)
    assert (len(va), len(te)) == (22, 22)
    again = quality.split_indices(spec, 0)
    assert all(np.array_equal(a, b) for a, b in zip((tr, va, te), again, strict=True))
    assert set(spec.frame.iloc[te][spec.target]) == set(spec.frame[spec.target])


@pytest.mark.slow
def test_fit_ours_scores_exactly_the_given_test_rows():
    spec = quality_tables.iris()
    tr, va, te = quality.split_indices(spec, 0)
    f = spec.frame
    out = quality.fit_ours(quality.ours_config(["train.epochs=3"], 0, spec), f.iloc[tr], f.iloc[va], f.iloc[te])
    assert out["test_proba"].shape == (len(te), 3)
    np.testing.assert_allclose(out["test_proba"].sum(axis=1), 1.0, rtol=1e-5)
    assert list(out["classes"]) == ["setosa", "versicolor", "virginica"]
    assert (out["batch_size"], out["epochs"], out["patience"]) == (16, 3, 20)  # auto batch: 6 steps per epoch
    m = quality.metrics(spec, out, f.iloc[te])
    assert 0.0 <= m["accuracy"] <= 1.0 and m["log_loss"] > 0


@pytest.mark.slow
def test_fit_ours_takes_text_gaps_and_regression():
    spec = quality_tables.penguins_mass()
    assert spec.text_columns and spec.has_missing
    tr, va, te = quality.split_indices(spec, 0)
    f = spec.frame
    out = quality.fit_ours(quality.ours_config(["train.epochs=3"], 0, spec), f.iloc[tr], f.iloc[va], f.iloc[te])
    assert out["test_pred"].shape == (len(te),)
    assert 2000 < out["test_pred"].mean() < 7000  # grams: decoded to the target's units
    m = quality.metrics(spec, out, f.iloc[te])
    assert m["rmse"] > 0


@pytest.mark.slow
def test_benchmark_table_has_every_contender_and_the_targets(tmp_path):
    out = tmp_path / "q.md"
    rc = quality.main(
        ["--seeds", "1", "--tables", "iris,cars_mpg", "--contenders", "ours,linear,HistGB", "--out", str(out)]
    )
    text = out.read_text()
    assert rc == 0
    assert text.count("| cars_mpg |") == 3 and text.count("| iris |") == 3
    assert "| ours [16/200/20] |" in text
    assert "Mean rank" in text and "ours vs linear" in text and "mean RMSE ratio" in text
