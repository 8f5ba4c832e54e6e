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


def test_holdout_split_never_touches_the_test_rows():
    spec = quality_tables.breast_cancer()
    for seed in (0, 3):
        tr, va, te = quality.split_indices(spec, seed)
        itr, iva, hold = quality.holdout_indices(spec, seed)
        assert np.array_equal(hold, va)  # scored on the validation rows
        assert set(itr) | set(iva) == set(tr) and not set(itr) & set(iva)  # trained / stopped on training rows
        assert not (set(itr) | set(iva) | set(hold)) & set(te)
        assert len(iva) == round(0.15 * len(spec.frame))


@pytest.mark.slow
def test_seed_ensemble_contender_is_the_mean_of_one_program(tmp_path):
    spec = quality_tables.penguins_mass()  # regression with text and gaps
    tr, va, te = quality.holdout_indices(spec, 0)
    f = spec.frame
    config = quality.ours_config(["train.epochs=3", "train.kfold_members=false"], 0, spec)  # shared rows
    ens = quality.fit_ours_seeds(config, f.iloc[tr], f.iloc[va], f.iloc[te], k=3)
    singles = [
        quality.fit_ours(
            quality.ours_config(["train.epochs=3", "train.members=1"], s, spec), f.iloc[tr], f.iloc[va], f.iloc[te]
        )
        for s in (0, 1, 2)
    ]
    assert ens["test_pred"].shape == (len(te),)
    # each member of the program trains as its single run does (same seed, same rows): the mean of those
    np.testing.assert_allclose(ens["test_pred"], np.mean([s["test_pred"] for s in singles], axis=0), rtol=2e-4)
    rc = quality.main(
        [
            "--holdout",
            "--seeds",
            "1",
            "--tables",
            "iris",
            "--contenders",
            "ours 8 seeds,linear",
            "--out",
            str(tmp_path / "h.md"),
        ]
    )
    text = (tmp_path / "h.md").read_text()
    assert rc == 0 and "| ours 8 seeds [16/200/20] |" in text and "validation rows" in text
