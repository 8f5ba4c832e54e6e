"""The batch command: streamed blocks, columns by name, pass-through, errors, never a partial output."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlp_jax import predict
from mlp_jax.predictor import Predictor
from tests.helpers import ROOT


@pytest.fixture(scope="module")
def predictor(trained_workdir: Path) -> Predictor:
    return Predictor.load(trained_workdir)


@pytest.fixture
def frame(predictor: Predictor) -> pd.DataFrame:
    """3000 rows: the features in reversed order, plus an id and a free-text column."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(3000, predictor.n_features)).astype(np.float32)
    names = list(predictor.feature_names)
    df = pd.DataFrame(x, columns=names)[names[::-1]]
    df.insert(0, "id", [f"{i:05d}" for i in range(len(df))])
    df["note"] = ["a, quoted" if i % 7 == 0 else "" for i in range(len(df))]
    return df


def run_cli(*args: str) -> tuple[int, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "mlp_jax.predict", *args], cwd=ROOT, capture_output=True, text=True, timeout=180
    )
    return proc.returncode, proc.stdout + proc.stderr


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_cli_scores_a_csv_like_the_predictor(tmp_path, trained_workdir, predictor, frame):
    src, dst = tmp_path / "in.csv", tmp_path / "out" / "pred.csv"
    frame.to_csv(src, index=False)
    code, out = run_cli("--model", str(trained_workdir), "--input", str(src), "--output", str(dst), "--no-progress")
    assert code == 0, out
    assert "wrote 3,000 rows" in out
    got = pd.read_csv(dst, dtype={"id": str, "note": str}, keep_default_na=False)
    assert list(got.columns) == ["id", "note", "prediction", "proba_0", "proba_1"]
    assert got["id"].tolist() == frame["id"].tolist()  # passed through verbatim (leading zeros kept)
    assert got["note"].tolist() == frame["note"].tolist()
    expected = predictor.predict_frame(frame)
    assert got["prediction"].tolist() == expected["prediction"].tolist()
    assert np.array_equal(got[["proba_0", "proba_1"]].to_numpy(np.float32), expected[["proba_0", "proba_1"]].to_numpy())
    assert leftovers(dst.parent) == []
    assert dst.stat().st_mode & 0o044  # an ordinary readable file, not mkstemp's 0600


def test_small_blocks_stream_to_the_same_bytes(tmp_path, predictor, frame):
    src = tmp_path / "in.csv"
    frame.to_csv(src, index=False)
    whole = predict.predict_csv(predictor, src, tmp_path / "a.csv", progress=False)
    streamed = predict.predict_csv(predictor, src, tmp_path / "b.csv", block_bytes=16 << 10, progress=True)
    assert whole.rows == streamed.rows == 3000
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    kept = predict.predict_csv(predictor, src, tmp_path / "c.csv", keep_features=True, progress=False)
    assert kept.columns[: len(frame.columns)] == list(frame.columns)


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d, df: d / "missing.csv", "input file not found"),
        (lambda d, df: _write(d / "empty.csv", ""), "input file is empty"),
        (lambda d, df: _write(d / "header.csv", ",".join(df.columns) + "\n"), "has a header but 0 data rows"),
        (lambda d, df: df.drop(columns=["feature_1", "feature_4"]), "missing feature column(s): feature_1, feature_4"),
        (lambda d, df: df.assign(prediction=1), "input column(s) prediction would clash"),
        (lambda d, df: df.rename(columns={"note": "id"}), "duplicate column name(s) in the header: id"),
    ],
)
def test_bad_inputs_fail_with_a_message_and_no_output(tmp_path, predictor, frame, make, message):
    made = make(tmp_path, frame)
    if isinstance(made, pd.DataFrame):
        src = tmp_path / "in.csv"
        made.to_csv(src, index=False)
    else:
        src = made
    dst = tmp_path / "out.csv"
    with pytest.raises(predict.BatchError) as e:
        predict.predict_csv(predictor, src, dst, progress=False)
    assert message in str(e.value)
    assert not dst.exists() and leftovers(tmp_path) == []


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("abc", "CSV conversion error to double: invalid value 'abc'"),
        ("", "missing value in feature column 'feature_3' at data row 2990"),
        (
            "inf",
            "non-finite value (NaN, inf, or beyond float32's range) in feature column 'feature_3' at data row 2990",
        ),
        ("1e39", "non-finite value"),
    ],
)
def test_a_bad_value_late_in_the_file_leaves_the_old_output_untouched(tmp_path, predictor, frame, value, message):
    """Many blocks are written to the temporary file before the bad row is read; the output never changes."""
    src, dst = tmp_path / "in.csv", tmp_path / "out.csv"
    frame = frame.astype({"feature_3": object})
    frame.loc[2989, "feature_3"] = value
    frame.to_csv(src, index=False)
    dst.write_text("previous results\n")
    with pytest.raises(predict.BatchError) as e:
        predict.predict_csv(predictor, src, dst, block_bytes=16 << 10, progress=False)
    assert message in str(e.value)
    assert dst.read_text() == "previous results\n" and leftovers(tmp_path) == []


def test_cli_errors_exit_nonzero_with_the_reason(tmp_path, trained_workdir, frame, capsys):
    src = tmp_path / "in.csv"
    frame.drop(columns=["feature_0"]).to_csv(src, index=False)
    args = ["--input", str(src), "--output", str(tmp_path / "o.csv"), "--no-progress"]
    assert predict.main(["--model", str(trained_workdir), *args]) == 1
    assert "error: missing feature column(s): feature_0" in capsys.readouterr().err
    assert predict.main(["--model", str(tmp_path / "nope"), *args]) == 1
    err = capsys.readouterr().err
    assert "cannot load --model" in err and "does not exist" in err
    assert predict.main(["--model", str(trained_workdir), "--input", str(src), "--output", str(src)]) == 1
    assert "would overwrite the input" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        predict.main(["--model", str(trained_workdir), "--input", str(src)])
    assert e.value.code == 2
    assert not (tmp_path / "o.csv").exists()
