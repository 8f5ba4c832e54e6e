"""The batch command: streamed blocks, columns by name, pass-through verbatim, one CSV dialect (BOM,
duplicate headers), real tables (penguins), regression columns, Parquet, errors, never a partial output;
``-``, FIFOs and ``/dev/fd/N`` written to as streams, never replaced; SIGTERM cleans up like Ctrl-C."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlp_jax import data, predict
from mlp_jax.predictor import Predictor
from tests.helpers import ROOT, penguins_csv, trained_penguins, trained_regression


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
    expected = predictor.predict_frame(pd.read_csv(src, dtype=str, keep_default_na=False))  # the same text
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
        (lambda d, df: df.rename(columns={"note": "id"}), "the header names column(s) more than once: 'id'"),
        (
            lambda d, df: _write(d / "semi.csv", df.to_csv(sep=";", index=False)),
            "the header is one column holding semicolons: the file looks semicolons-separated",
        ),
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
        ("abc", "data row 2990 (line 2991), column 'feature_3': expected a number, got 'abc'"),
        ("inf", "data row 2990 (line 2991), column 'feature_3': non-finite value 'inf'"),
        ("yes", "data row 2990 (line 2991), column 'feature_3': expected a number, got 'yes'"),
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
    handler, hook = signal.getsignal(signal.SIGTERM), sys.unraisablehook
    assert predict.main(["--model", str(trained_workdir), *args]) == 1
    assert signal.getsignal(signal.SIGTERM) is handler and sys.unraisablehook is hook  # both put back
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


# ----------------------------------------------------------------------------- real tables


@pytest.fixture(scope="module")
def penguins(tmp_path_factory) -> Predictor:
    return Predictor.load(trained_penguins(tmp_path_factory), buckets=(32, 256))


def penguin_input(path: Path, bom: bool = False) -> Path:
    """The penguins CSV (its own ``NA`` gaps) plus an id with leading zeros and a pass-through text column."""
    lines = penguins_csv().read_text().splitlines()
    out = ["id," + lines[0] + ",comment"]
    for i, line in enumerate(lines[1:]):
        comment = ["NA", "null", "N/A", "NaN", "", '"x, y"'][i % 6]
        out.append(f"{i:04d},{line},{comment}")
    out[5] = out[5].replace("Torgersen", "Atlantis", 1)  # an island never seen in training
    path.write_bytes(("\ufeff" if bom else "").encode() + ("\n".join(out) + "\n").encode())
    return path


def test_penguins_csv_with_gaps_unseen_values_and_verbatim_pass_through(tmp_path, penguins):
    src, dst = penguin_input(tmp_path / "in.csv"), tmp_path / "out.csv"
    result = predict.predict_csv(penguins, src, dst, block_bytes=4 << 10, progress=False)
    assert result.rows == 344
    got = pd.read_csv(dst, dtype=str, keep_default_na=False)
    assert list(got.columns) == ["id", "species", "comment", *penguins.output_columns()]
    raw = pd.read_csv(src, dtype=str, keep_default_na=False)
    for c in ("id", "species", "comment"):  # byte for byte: NA, null, N/A, NaN, "" and "0001" as written
        assert got[c].tolist() == raw[c].tolist(), c
    assert got["comment"].iloc[:6].tolist() == ["NA", "null", "N/A", "NaN", "", "x, y"]
    want = penguins.predict_frame(data.read_csv_for_prediction(src, penguins.feature_names))
    assert got["prediction"].tolist() == want["prediction"].tolist()
    probs = got[penguins.probability_columns()].to_numpy(np.float32)
    assert np.array_equal(probs, want[penguins.probability_columns()].to_numpy())
    # keep_features copies the feature columns as written (their NA too)
    kept = predict.predict_csv(penguins, src, tmp_path / "k.csv", keep_features=True, progress=False)
    assert kept.columns[:10] == list(raw.columns)
    k = pd.read_csv(tmp_path / "k.csv", dtype=str, keep_default_na=False)
    assert k["sex"].tolist() == raw["sex"].tolist() and "NA" in k["sex"].tolist()


def test_a_byte_order_mark_is_stripped_from_the_header(tmp_path, penguins):
    plain = predict.predict_csv(penguins, penguin_input(tmp_path / "a.csv"), tmp_path / "a.out", progress=False)
    bom = predict.predict_csv(penguins, penguin_input(tmp_path / "b.csv", bom=True), tmp_path / "b.out", progress=False)
    assert bom.columns == plain.columns and bom.columns[0] == "id"
    assert (tmp_path / "a.out").read_bytes() == (tmp_path / "b.out").read_bytes()


def test_a_bad_penguin_value_names_row_and_column_and_writes_nothing(tmp_path, penguins):
    src, dst = penguin_input(tmp_path / "in.csv"), tmp_path / "out.csv"
    lines = src.read_text().splitlines()
    lines[300] = lines[300].replace(",male,", ",male,", 1)
    cells = lines[300].split(",")
    cells[4] = "long"  # bill_depth_mm of data row 300
    lines[300] = ",".join(cells)
    src.write_text("\n".join(lines) + "\n")
    code, out = run_cli("--model", str(penguins.checkpoint.path), "--input", str(src), "--output", str(dst))
    assert code == 1
    assert "data row 300 (line 301), column 'bill_depth_mm': expected a number, got 'long'" in out
    assert not dst.exists() and leftovers(tmp_path) == []


def test_duplicate_header_names_are_refused_naming_them(tmp_path, penguins):
    src = tmp_path / "dup.csv"
    text = penguin_input(tmp_path / "in.csv").read_text().replace(",comment\n", ",island\n", 1)
    src.write_text(text)
    with pytest.raises(predict.BatchError, match=r"more than once: 'island'"):
        predict.predict_csv(penguins, src, tmp_path / "o.csv", progress=False)
    assert not (tmp_path / "o.csv").exists() and leftovers(tmp_path) == []


@pytest.mark.slow
def test_regression_batch_writes_one_column_per_target(tmp_path, tmp_path_factory):
    workdir = trained_regression(tmp_path_factory)
    reg = Predictor.load(workdir, buckets=(32, 256))
    table = pd.read_csv(workdir.parent.parent / "regression.csv", dtype=str, keep_default_na=False)
    src, dst = tmp_path / "in.csv", tmp_path / "out.csv"
    table.drop(columns=["y2"]).to_csv(src, index=False)
    code, out = run_cli("--model", str(workdir), "--input", str(src), "--output", str(dst), "--no-progress")
    assert code == 0, out
    got = pd.read_csv(dst)
    assert list(got.columns) == ["y1", "prediction_y1", "prediction_y2"]
    want = reg.predict_outputs(table)
    np.testing.assert_allclose(got[["prediction_y1", "prediction_y2"]].to_numpy(), want, rtol=1e-12)


def test_parquet_input_gives_the_same_predictions(tmp_path, penguins):
    frame = data.read_table(penguins_csv())
    frame.insert(0, "id", [f"{i:04d}" for i in range(len(frame))])
    src = tmp_path / "in.parquet"
    frame.to_parquet(src, index=False)
    predict.predict_csv(penguins, src, tmp_path / "out.csv", progress=False)
    got = pd.read_csv(tmp_path / "out.csv", dtype={"id": str})
    assert list(got.columns) == ["id", "species", *penguins.output_columns()]
    assert got["id"].tolist() == frame["id"].tolist()
    want = penguins.predict_frame(frame)
    assert got["prediction"].tolist() == want["prediction"].tolist()
    np.testing.assert_allclose(got[penguins.probability_columns()].to_numpy(), want.iloc[:, 1:].to_numpy(), rtol=1e-6)


def test_parquet_decimals_and_folders_read_as_in_training(tmp_path, tmp_path_factory):
    from decimal import Decimal

    from tests.helpers import trained_once

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.normal(size=300), "n": rng.integers(0, 10, 300)})
    frame["dec"] = [Decimal(f"{v:.2f}") for v in rng.normal(size=300)]
    frame["target"] = (frame["a"] + frame["dec"].astype(float) > 0).astype(int)
    table = tmp_path_factory.getbasetemp() / "decimals.parquet"
    if not table.exists():
        frame.to_parquet(table)
    model = Predictor.load(trained_once(tmp_path_factory, "decimals", table), buckets=(32, 256))
    assert [r["role"] for r in model.roles] == ["numeric"] * 3  # the decimals are numbers, not a category
    want = model.predict_frame(frame.assign(dec=frame["dec"].astype(float)))
    parts = tmp_path / "parts"
    parts.mkdir()
    frame.iloc[:100].to_parquet(parts / "a.parquet")
    frame.iloc[100:].assign(n=lambda f: f["n"] + 0.5).to_parquet(parts / "b.parquet")  # int64 here, double there
    want_parts = model.predict_frame(
        frame.assign(dec=frame["dec"].astype(float), n=frame["n"] + (frame.index >= 100) / 2)
    )
    for src, expected in ((table, want), (parts, want_parts)):
        predict.predict_csv(model, src, tmp_path / "out.csv", keep_features=True, progress=False)
        got = pd.read_csv(tmp_path / "out.csv")
        assert got["dec"].tolist() == frame["dec"].astype(float).tolist()  # passed through as written
        np.testing.assert_allclose(got[model.probability_columns()], expected[model.probability_columns()], rtol=1e-6)
    frame.iloc[100:].assign(n=lambda f: f["n"].astype(str)).to_parquet(parts / "b.parquet")
    with pytest.raises(predict.BatchError, match=r"column 'n' is string in b.parquet but int64 in a.parquet"):
        predict.predict_csv(model, parts, tmp_path / "out2.csv", progress=False)
    assert not (tmp_path / "out2.csv").exists()


def test_an_output_that_cannot_be_written_is_a_named_error_and_leaves_nothing(tmp_path, predictor, frame):
    src = tmp_path / "in.csv"
    frame.to_csv(src, index=False)
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    for dst, message in (
        (blocker / "sub" / "out.csv", "cannot write the output"),  # a folder under a file
        (tmp_path / "out.parquet", "names Parquet, but batch prediction writes CSV"),
    ):
        with pytest.raises(predict.BatchError, match=message):
            predict.predict_csv(predictor, src, dst, progress=False)
        assert not dst.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "in.csv"]


# ----------------------------------------------------------------------------- streams: -, FIFOs, /dev/fd/N


def run_cli_bytes(*args: str, cwd: Path, tmpdir: Path, **popen: object) -> subprocess.CompletedProcess:
    """The command with its standard output as bytes, run from ``cwd`` with ``TMPDIR=tmpdir``."""
    env = {
        **os.environ,
        "TMPDIR": str(tmpdir),
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.run(
        [sys.executable, "-m", "mlp_jax.predict", *args, "--no-progress"],
        cwd=cwd,
        env=env,
        capture_output=True,
        timeout=180,
        **popen,
    )


@contextlib.contextmanager
def fifo_reader(fifo: Path) -> Iterator[list[bytes | None]]:
    """A thread that opens the FIFO for reading (blocking until a writer comes) and reads to
    end-of-file; once the block ends the list holds the bytes read, or ``None`` when the reader
    was still waiting for a writer 30 s later (it is then released, so no thread hangs)."""
    got: list[bytes | None] = []
    keep = fifo.with_name(fifo.name + ".inode")
    os.link(fifo, keep)  # reaches the FIFO even if its name is replaced
    thread = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    thread.start()
    try:
        yield got
    finally:
        thread.join(timeout=30)
        if thread.is_alive():  # nobody opened it for writing: end the reader's wait
            got.append(None)
            with contextlib.suppress(OSError):
                os.close(os.open(keep, os.O_WRONLY | os.O_NONBLOCK))
            thread.join(timeout=10)
        keep.unlink()


@pytest.fixture
def system_tmp(tmp_path, monkeypatch) -> Path:
    """An empty folder as the system temp folder, to see what is left there."""
    folder = tmp_path / "system-tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_a_fifo_gets_the_bytes_a_file_gets_and_stays_a_fifo(tmp_path, predictor, frame, system_tmp):
    src, fifo = tmp_path / "in.csv", tmp_path / "out.fifo"
    frame.to_csv(src, index=False)
    predict.predict_csv(predictor, src, tmp_path / "file.csv", block_bytes=16 << 10, progress=False)
    os.mkfifo(fifo)
    with fifo_reader(fifo) as got:
        result = predict.predict_csv(predictor, src, fifo, block_bytes=16 << 10, progress=False)
    assert result.rows == 3000
    assert got == [(tmp_path / "file.csv").read_bytes()]
    assert stat.S_ISFIFO(fifo.lstat().st_mode)  # written to, not replaced
    assert leftovers(tmp_path) == [] and list(system_tmp.iterdir()) == []


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_a_bad_input_writes_nothing_to_a_fifo_and_ends_its_reader(tmp_path, predictor, frame, system_tmp):
    """The bad row comes after many blocks were scored: the reader gets end-of-file and 0 bytes."""
    src, fifo = tmp_path / "in.csv", tmp_path / "out.fifo"
    frame = frame.astype({"feature_3": object})
    frame.loc[2989, "feature_3"] = "abc"
    frame.to_csv(src, index=False)
    os.mkfifo(fifo)
    with fifo_reader(fifo) as got, pytest.raises(predict.BatchError, match="data row 2990"):
        predict.predict_csv(predictor, src, fifo, block_bytes=16 << 10, progress=False)
    assert got[0] == b""  # end-of-file at once (not None: a reader left waiting for a writer forever)
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    assert leftovers(tmp_path) == [] and list(system_tmp.iterdir()) == []


def test_output_dash_writes_the_csv_to_stdout_and_no_file_and_nothing_on_failure(
    tmp_path, trained_workdir, predictor, frame
):
    src, temp = tmp_path / "in.csv", tmp_path / "system-tmp"
    frame.to_csv(src, index=False)
    temp.mkdir()
    predict.predict_csv(predictor, src, tmp_path / "file.csv", progress=False)
    proc = run_cli_bytes(
        "--model", str(trained_workdir), "--input", "in.csv", "--output", "-", cwd=tmp_path, tmpdir=temp
    )
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout == (tmp_path / "file.csv").read_bytes()  # the CSV alone, nothing printed into it
    got = pd.read_csv(io.BytesIO(proc.stdout), dtype={"id": str})
    assert list(got.columns) == ["id", "note", "prediction", "proba_0", "proba_1"] and len(got) == 3000
    assert "wrote 3,000 rows" in proc.stderr.decode() and "to standard output" in proc.stderr.decode()
    assert not (tmp_path / "-").exists() and list(temp.iterdir()) == []

    # a bad value late in the file (after many blocks were scored): nothing reaches stdout
    frame = frame.astype({"feature_3": object})
    frame.loc[2989, "feature_3"] = "abc"
    frame.to_csv(src, index=False)
    args = ("--model", str(trained_workdir), "--input", "in.csv", "--output", "-", "--block-mb", "0.02")
    proc = run_cli_bytes(*args, cwd=tmp_path, tmpdir=temp)
    assert proc.returncode == 1
    assert proc.stdout == b""
    assert "data row 2990 (line 2991), column 'feature_3'" in proc.stderr.decode()
    assert not (tmp_path / "-").exists() and list(temp.iterdir()) == []


@pytest.mark.skipif(not Path("/dev/fd").is_dir(), reason="no /dev/fd")
@pytest.mark.parametrize("target", ["pipe", "appended file"])
def test_a_dev_fd_output_is_written_through_the_descriptor(tmp_path, trained_workdir, predictor, frame, target):
    """``--output >(gzip > x)`` hands the command ``/dev/fd/N``, a pipe; ``/dev/fd/N`` may also be a
    file the shell opened (``3>>log``): the CSV is written through it (appended), the alias never replaced."""
    src, temp = tmp_path / "in.csv", tmp_path / "system-tmp"
    frame.to_csv(src, index=False)
    temp.mkdir()
    predict.predict_csv(predictor, src, tmp_path / "file.csv", progress=False)
    log = tmp_path / "log.csv"
    log.write_bytes(b"previous\n")
    if target == "pipe":
        r, w = os.pipe()
        received: list[bytes] = []
        reader = threading.Thread(target=lambda: received.append(os.fdopen(r, "rb").read()))
        reader.start()
    else:
        w = os.open(log, os.O_WRONLY | os.O_APPEND)
    try:
        proc = run_cli_bytes(
            "--model",
            str(trained_workdir),
            "--input",
            "in.csv",
            "--output",
            f"/dev/fd/{w}",
            cwd=tmp_path,
            tmpdir=temp,
            pass_fds=(w,),
        )
    finally:
        os.close(w)
    assert proc.returncode == 0, proc.stderr.decode()
    assert b"wrote 3,000 rows" in proc.stdout
    want = (tmp_path / "file.csv").read_bytes()
    if target == "pipe":
        reader.join(timeout=60)
        assert received == [want]
    else:
        assert log.read_bytes() == b"previous\n" + want
    assert list(temp.iterdir()) == [] and leftovers(tmp_path) == []


# ----------------------------------------------------------------------------- SIGTERM


def test_sigterm_mid_run_exits_143_and_leaves_no_temporary_file_and_no_output(tmp_path, trained_workdir, frame):
    """What ``timeout``, ``docker stop`` and Kubernetes send: the run stops like after Ctrl-C, its
    temporary file removed. The input (300,000 rows) takes seconds to score; SIGTERM is sent as
    soon as the temporary file appears."""
    src, dst = tmp_path / "in.csv", tmp_path / "out.csv"
    header, body = frame.to_csv(index=False).split("\n", 1)
    with src.open("w") as f:
        f.write(header + "\n")
        for _ in range(100):
            f.write(body)
    cmd = [sys.executable, "-m", "mlp_jax.predict", "--model", str(trained_workdir), "--input", str(src)]
    proc = subprocess.Popen(
        [*cmd, "--output", str(dst), "--no-progress"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not leftovers(tmp_path) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        seen = leftovers(tmp_path)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert seen, f"the run ended (code {proc.returncode}) before its temporary file appeared:\n{err}"
    assert proc.returncode == 143, err  # 128 + SIGTERM
    assert "error: stopped by SIGTERM" in err and "Traceback" not in err
    assert leftovers(tmp_path) == [] and not dst.exists()
