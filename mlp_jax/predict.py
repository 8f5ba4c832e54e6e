"""Batch prediction over CSV (or Parquet) files: ``python -m mlp_jax.predict --model MODEL --input in.csv --output out.csv``.

The input is streamed in blocks (memory stays bounded whatever the file size) with
:func:`mlp_jax.data.iter_csv_for_prediction`: the project's one CSV dialect (a UTF-8
byte-order mark is stripped, a header naming a column twice is refused). Every column is
read as text; feature columns are found by name, in any order, and go through the
model's fitted preprocessing (numbers parsed, the null tokens ``NA``/``null``/``''``... mean
missing and are imputed as in training, categories coded, unseen ones to the unknown slot).
Every other column (an id, say) is copied to the output byte for byte (``NA`` stays ``NA``).

The output holds the passed-through columns, then :meth:`Predictor.output_columns`:
``prediction`` (the original class label, typed as trained) and one ``proba_<class>`` column
per class (an ensemble adds one ``std_<class>`` column per class: the members' spread), or
the regression prediction(s) in the targets' units (``prediction`` or ``prediction_<target>``). It is written to a temporary file beside the output and renamed
at the end, so a failure (a bad value in row 2,990,000, say) never leaves a half-written
file (an existing output stays as it was). ``--output -`` writes to standard output, and an
existing output that is not a regular file (a FIFO, ``/dev/null``, ``/dev/stdout``, a
``/dev/fd/N`` pipe from ``>(gzip > x)``) is written to as a stream, never replaced: the whole
result goes to a temporary file in the system temp folder first and is copied to the stream
only once every row was scored, so a failure writes nothing to it (a FIFO's waiting reader
gets end-of-file). Scoring goes through the same
:class:`~mlp_jax.predictor.Predictor` as the service and the MLflow pyfunc, so the numbers
are the same. A Parquet file (``.parquet``/``.pq``) is read in row groups the same way
(pass-through columns keep their Parquet types).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import secrets
import shutil
import signal
import stat
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from mlp_jax import data
from mlp_jax.export import load_predictor
from mlp_jax.predictor import Predictor, PredictorError

#: Bytes of CSV parsed per block; one block is scored and written before the next is held.
DEFAULT_BLOCK_BYTES = 8 << 20
#: Rows per block when reading Parquet.
PARQUET_BATCH_ROWS = 65536


class BatchError(ValueError):
    """The input cannot be scored; the message names the file, column or row at fault."""


#: The ``output_path`` that means standard output.
STDOUT = "-"


@dataclass(frozen=True)
class BatchResult:
    rows: int
    seconds: float
    output: Path  #: ``Path("-")`` for standard output
    columns: list[str]

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else float("inf")


def read_header(path: Path) -> list[str]:
    """Column names of a CSV (BOM stripped, quoting respected) or Parquet file; BatchError for duplicates."""
    if path.stat().st_size == 0:
        raise BatchError(f"input file is empty: {path}")
    try:
        return data.read_header(path)
    except data.DataError as e:
        raise BatchError(str(e)) from None


def plan_columns(header: list[str], predictor: Predictor, keep_features: bool) -> tuple[list[str], list[str]]:
    """``(passed-through columns, output columns)``; BatchError names missing or clashing columns."""
    features = set(predictor.feature_names)
    missing = [f for f in predictor.feature_names if f not in header]
    if missing:
        raise BatchError(
            f"missing feature column(s): {', '.join(missing)} (the model expects {predictor.n_features} columns: "
            f"{', '.join(predictor.feature_names)}){data.delimiter_hint(header)}"
        )
    passed = [c for c in header if keep_features or c not in features]
    produced = predictor.output_columns()
    clash = [c for c in passed if c in produced]
    if clash:
        raise BatchError(f"input column(s) {', '.join(clash)} would clash with the output columns; rename them")
    return passed, passed + produced


def _label_type(predictor: Predictor) -> pa.DataType:
    kinds = predictor.label_array(np.eye(len(predictor.classes), dtype=np.float32)).dtype
    return pa.bool_() if kinds.kind == "b" else pa.int64() if kinds.kind == "i" else pa.string()


def output_fields(predictor: Predictor) -> list[pa.Field]:
    if predictor.task == "classification":
        return [pa.field("prediction", _label_type(predictor))] + [
            pa.field(c, pa.float32()) for c in (*predictor.probability_columns(), *predictor.spread_columns())
        ]
    return [pa.field(c, pa.float64()) for c in predictor.output_columns()]


def output_arrays(predictor: Predictor, outputs: np.ndarray) -> list[pa.Array]:
    if predictor.task == "classification":
        labels = predictor.label_array(outputs)
        label_type = _label_type(predictor)
        return [pa.array(labels, type=label_type)] + [pa.array(outputs[:, k]) for k in range(outputs.shape[1])]
    return [pa.array(outputs[:, k]) for k in range(outputs.shape[1])]


_WHERE = re.compile(r"^column .*?, row \d+: ")


def _bad_value(src: Path, e: PredictorError, offset: int) -> BatchError:
    """Rewords a predictor error with the 1-based data row of the file."""
    if e.row is None:
        return BatchError(f"{src}: {e}")
    detail = _WHERE.sub("", str(e))
    return BatchError(
        f"{src}: data row {offset + e.row + 1} (line {offset + e.row + 2}), column {e.column!r}: {detail}"
    )


def _parsed(frame: Any, numeric: list[str]) -> Any:
    """A copy of a raw-text block with its numeric feature columns parsed by pyarrow (as the
    training CSV was read: the same float64 values, ~5x faster than parsing text in pandas).

    The null tokens become NaN (missing). A column with anything else that does not parse
    (or an infinity) stays text, so the preprocessor reports the bad value with its row and column.
    """
    import pyarrow.compute as pc

    from mlp_jax.features import NULL_TOKENS

    out = {}
    for c in numeric:
        text = pa.array(frame[c].to_numpy(dtype=object), type=pa.string())
        text = pc.if_else(pc.is_in(text, value_set=_null_tokens(NULL_TOKENS)), None, text)
        try:
            parsed = pc.cast(text, pa.float64()).to_numpy(zero_copy_only=False)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            continue
        if not np.isinf(parsed).any():  # inf is refused by the preprocessor, quoted as written
            out[c] = parsed
    return frame.assign(**out) if out else frame


_NULLS: dict[tuple[str, ...], pa.Array] = {}


def _null_tokens(tokens: tuple[str, ...]) -> pa.Array:
    if tokens not in _NULLS:
        _NULLS[tokens] = pa.array(list(tokens), type=pa.string())
    return _NULLS[tokens]


def _blocks(src: Path, parquet: pa.Schema | None, block_bytes: int) -> Iterator[tuple[Any, pa.RecordBatch | None]]:
    """``(pandas frame, arrow batch or None)`` per block; ``parquet``: the Parquet input's schema, else None.

    A Parquet batch is read as ``parquet`` (a folder's files as their common schema,
    :func:`mlp_jax.data.parquet_schema`); the frame for the model holds decimals as float64,
    as training read them (the batch, passed through, keeps them).
    """
    if parquet is not None:
        import pyarrow.parquet as pq

        files = [src] if src.is_file() else data._parquet_files(src)
        for f in files:
            keys = data.hive_keys(src, f) if src.is_dir() else {}  # a partitioned folder's key=value folders
            for batch in pq.ParquetFile(f).iter_batches(batch_size=PARQUET_BATCH_ROWS):
                if src.is_dir():
                    arrays = [
                        pa.array([keys[c.name]] * batch.num_rows, pa.string())
                        if c.name in keys
                        else batch.column(c.name).cast(c.type)
                        for c in parquet
                    ]
                    batch = pa.RecordBatch.from_arrays(arrays, schema=parquet)
                yield data.decimals_as_floats(batch).to_pandas(), batch
        return
    # every column as raw text: the preprocessor treats the null tokens as missing in feature
    # columns, and passed-through (or kept) columns stay byte for byte
    for frame in data.iter_csv_for_prediction(src, (), block_bytes=block_bytes):
        yield frame, None


_FD_FOLDER = re.compile(r"/proc/(self|\d+)/fd")


def is_stream(output_path: str | os.PathLike) -> bool:
    """Whether ``output_path`` is written to as a stream rather than replaced by a new file:
    ``-`` (standard output), an existing file that is not a regular file or a folder (a FIFO,
    a character device such as ``/dev/null``), and a descriptor alias (``/dev/stdout``,
    ``/dev/fd/N``, ``/proc/self/fd/N``) whatever it points at (a replace would swap the alias itself)."""
    if os.fspath(output_path) == STDOUT:
        return True
    try:
        mode = os.stat(output_path).st_mode
    except OSError:  # absent (or unreadable: the write reports it)
        return False
    if stat.S_ISDIR(mode):
        return False
    if not stat.S_ISREG(mode):
        return True
    folder = os.path.realpath(os.path.dirname(os.path.abspath(output_path)))
    return folder == "/dev" or _FD_FOLDER.fullmatch(folder) is not None


def writes_to_stdout(output_path: str | os.PathLike) -> bool:
    """Whether ``output_path`` is ``-`` or the very file standard output is (``/dev/stdout``, say)."""
    if os.fspath(output_path) == STDOUT:
        return True
    try:
        return os.path.samestat(os.stat(output_path), os.fstat(1))
    except (OSError, ValueError):
        return False


def _copy_to_stream(tmp: Path, dst: Path | None) -> None:
    """Copies the finished output ``tmp`` to ``dst`` (an existing stream, opened for appending:
    ``/dev/stdout`` redirected to a file is not truncated) or to standard output (``dst`` None)."""
    with tmp.open("rb") as f, contextlib.ExitStack() as stack:
        if dst is None:
            sys.stdout.flush()  # anything printed before goes first
            try:
                out = stack.enter_context(open(sys.stdout.fileno(), "wb", closefd=False))
            except (AttributeError, OSError, ValueError):  # a replaced sys.stdout without a descriptor
                out = sys.stdout.buffer
        else:
            out = stack.enter_context(dst.open("ab"))
        shutil.copyfileobj(f, out)
        out.flush()


def _release_reader(dst: Path) -> None:
    """A reader blocked opening the FIFO ``dst`` gets end-of-file (0 bytes) instead of waiting forever."""
    with contextlib.suppress(OSError):
        if stat.S_ISFIFO(os.stat(dst).st_mode):
            os.close(os.open(dst, os.O_WRONLY | os.O_NONBLOCK))  # ENXIO when no reader waits


#: The exit code after SIGTERM: 128 + 15, as a shell reports a process SIGTERM ended.
EXIT_SIGTERM = 128 + signal.SIGTERM


class Terminated(SystemExit):
    """Raised in the main thread by SIGTERM during :func:`main`. A SystemExit (code 143), so no
    ``except Exception`` swallows it, frameworks that pass SystemExit and KeyboardInterrupt on
    (asyncio's callbacks, which Orbax's loading runs) let it through, and every cleanup on the way runs."""

    def __init__(self) -> None:
        super().__init__(EXIT_SIGTERM)


class _SigtermStop:
    """SIGTERM's handler while :func:`main` runs: the first SIGTERM raises :class:`Terminated`
    where the main thread is, later ones are ignored (the cleanup is under way).

    A handler's exception can land where Python swallows it: in a gc callback (JAX registers one,
    and measured here 2 of 3 SIGTERMs landed in it), a ``__del__``, a weakref callback. So the
    request is also remembered, :meth:`check` (called by :func:`predict_csv` before each block
    and before the output is put in place) raises it again, and :meth:`unraisable` keeps the
    swallowed copy from printing a traceback.
    """

    def __init__(self) -> None:
        self.requested = False
        self._hook: Any = None

    def handle(self, signum: int, frame: Any) -> None:
        if not self.requested:
            self.requested = True
            raise Terminated

    def check(self) -> None:
        """Raises :class:`Terminated` when a SIGTERM came (its first raise may have been swallowed).

        Raises:
          Terminated: SIGTERM was received while :func:`main` runs.
        """
        if self.requested:
            raise Terminated

    def unraisable(self, info: Any) -> None:
        if not isinstance(info.exc_value, Terminated):
            self._hook(info)

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """Takes over SIGTERM for the block (main thread, default action only: an ignored SIGTERM
        or a caller's own handler is left alone) and puts the previous handler back after."""
        if (
            threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL
        ):
            yield
            return
        self.requested = False
        self._hook, sys.unraisablehook = sys.unraisablehook, self.unraisable
        previous = signal.signal(signal.SIGTERM, self.handle)
        try:
            yield
        finally:
            signal.signal(signal.SIGTERM, previous)
            sys.unraisablehook = self._hook
            self.requested = False


_SIGTERM = _SigtermStop()


def predict_csv(
    predictor: Predictor,
    input_path: str | os.PathLike,
    output_path: str | os.PathLike,
    *,
    keep_features: bool = False,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
    progress: bool | None = None,
) -> BatchResult:
    """Scores every row of ``input_path`` into ``output_path`` (atomically); see the module docstring.

    Args:
      output_path: a CSV file (replaced atomically); ``"-"`` for standard output; an existing
        FIFO or device (:func:`is_stream`) is written to as a stream once every row is scored.
      keep_features: also copy the feature columns (as written) to the output.
      block_bytes: CSV bytes per block (bounds memory).
      progress: show a progress bar (None: only on a terminal).

    Raises:
      BatchError: missing/empty input, duplicate header names, missing feature column, a bad
        value (its 1-based data row and column named), output that would overwrite the input,
        an output that cannot be written (a folder, a ``.parquet`` name, a closed pipe).
      Terminated: SIGTERM came while :func:`main` runs (the temporary file is removed first).
    """
    from tqdm import tqdm

    src, dst = Path(input_path), Path(output_path)
    to_stdout = os.fspath(output_path) == STDOUT
    stream = is_stream(output_path)
    if not src.exists():
        raise BatchError(f"input file not found: {src.resolve()}")
    parquet = data.is_parquet(src)
    if not parquet and not src.is_file():
        raise BatchError(f"not a file: {src}")
    if not to_stdout:
        if dst.exists() and dst.resolve() == src.resolve():
            raise BatchError(f"the output {dst} would overwrite the input; choose another path")
        if dst.is_dir():
            raise BatchError(f"the output {dst} is a directory; give a file path")
        if dst.suffix.lower() in (".parquet", ".pq"):
            raise BatchError(f"the output {dst} names Parquet, but batch prediction writes CSV; give a .csv path")
    header = read_header(src) if parquet else data._column_names(read_header(src))  # as the reader names them
    passed, out_columns = plan_columns(header, predictor, keep_features)
    in_schema = None
    if parquet:
        try:
            in_schema = data.parquet_schema(src)
        except data.DataError as e:
            raise BatchError(str(e)) from None
        passed_fields = [in_schema.field(c) for c in passed]
    else:
        passed_fields = [pa.field(c, pa.string()) for c in passed]
    schema = pa.schema(passed_fields + output_fields(predictor))
    numeric = list(predictor.numeric_columns)

    shown = "- (standard output)" if to_stdout else str(dst)
    created = [] if stream else [p for p in dst.parents if not p.exists()]  # deepest first
    tmp: Path | None = None
    start = time.perf_counter()
    rows = 0
    opened = False  # the stream was opened: a failure from here on may have written to it
    try:
        try:
            # The temporary file is named before it is made (O_EXCL, as mkstemp does), so an
            # interrupt (Ctrl-C, SIGTERM via main) at any moment after it exists removes it.
            if stream:  # the whole result first goes to the system temp folder (never beside a device)
                tmp = Path(tempfile.gettempdir()) / f".mlp-jax-predict.{secrets.token_hex(8)}.csv.tmp"
            else:
                dst.parent.mkdir(parents=True, exist_ok=True)
                tmp = dst.parent / f".{dst.name}.{secrets.token_hex(8)}.tmp"
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except OSError as e:
            tmp = None  # not made (or, on a name clash, not ours)
            for folder in created:  # leave no folder behind that this call made
                with contextlib.suppress(OSError):
                    folder.rmdir()
            raise BatchError(f"cannot write the output {shown}: {e.strerror or e}") from None
        with (
            pacsv.CSVWriter(str(tmp), schema) as writer,
            tqdm(
                unit=" rows",
                unit_scale=True,
                desc=f"predict {src.name}",
                disable=None if progress is None else not progress,
                file=sys.stderr,
            ) as bar,
        ):
            try:
                for frame, batch in _blocks(src, in_schema, block_bytes):
                    _SIGTERM.check()  # a SIGTERM whose Terminated was swallowed (see _SigtermStop)
                    if len(frame) == 0:
                        continue
                    try:
                        x = predictor.encode(_parsed(frame, numeric) if batch is None else frame)
                    except PredictorError as e:
                        raise _bad_value(src, e, rows) from None
                    outputs = predictor.run_encoded(x)
                    if batch is not None:
                        arrays = [batch.column(c) for c in passed]
                    else:
                        arrays = [pa.array(frame[c].to_numpy(dtype=object), type=pa.string()) for c in passed]
                    arrays += output_arrays(predictor, outputs)
                    writer.write_batch(pa.RecordBatch.from_arrays(arrays, schema=schema))
                    rows += len(frame)
                    bar.update(len(frame))
            except data.DataError as e:  # a ragged row, bad UTF-8
                raise BatchError(str(e)) from None
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as e:
                raise BatchError(f"cannot read {src}: {e}") from None
        if rows == 0:
            raise BatchError(f"{src} has a header but 0 data rows")
        _SIGTERM.check()
        if stream:
            opened = True
            try:
                _copy_to_stream(tmp, None if to_stdout else dst)
            except OSError as e:  # a reader that went away (EPIPE), a full disk behind /dev/stdout
                raise BatchError(f"cannot write the output {shown}: {e.strerror or e}") from None
        else:
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)  # made 0600; the output is an ordinary file
            os.replace(tmp, dst)
    except BaseException:
        if stream and not opened and not to_stdout:
            _release_reader(dst)
        raise
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)  # gone already after a replace
    return BatchResult(rows, time.perf_counter() - start, dst, out_columns)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m mlp_jax.predict", description="Score a CSV file, streamed in blocks, into a new CSV."
    )
    p.add_argument("--model", required=True, help="workdir, step folder or models:/ URI")
    p.add_argument(
        "--input", required=True, help="CSV with a header (or a .parquet file) holding the model's feature columns"
    )
    p.add_argument(
        "--output",
        required=True,
        help="CSV to write (replaced atomically); - for standard output; an existing FIFO or device "
        "(/dev/stdout, /dev/fd/N) is written to as a stream once every row is scored",
    )
    p.add_argument("--keep-features", action="store_true", help="also copy the feature columns to the output")
    p.add_argument("--block-mb", type=float, default=DEFAULT_BLOCK_BYTES / (1 << 20), help="CSV block size in MiB")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    if args.block_mb <= 0:
        p.error(f"--block-mb must be positive, got {args.block_mb}")
    return args


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (1 for a bad model or input, 2 for bad arguments,
    143 (128 + SIGTERM, the shell's convention) when SIGTERM stopped it).

    SIGTERM while the model loads or the rows are scored stops the run like Ctrl-C does: the
    temporary output is removed, an existing output stays as it was, nothing reaches a stream
    output unless its copy had begun. The summary line goes to standard output, or to standard
    error when the CSV does.
    """
    args = parse_args(argv)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    try:
        with _SIGTERM.installed():
            done = _score(args)
    except Terminated:
        print("error: stopped by SIGTERM before the output was complete", file=sys.stderr)
        return EXIT_SIGTERM
    if isinstance(done, int):
        return done
    predictor, result = done
    produced = predictor.output_columns()
    print(
        f"wrote {result.rows:,} rows ({', '.join(produced)} and "
        f"{len(result.columns) - len(produced)} passed-through column(s)) to "
        f"{'standard output' if args.output == STDOUT else result.output} "
        f"in {result.seconds:.2f} s ({result.rows_per_second:,.0f} rows/s)",
        file=sys.stderr if writes_to_stdout(args.output) else sys.stdout,  # never into the data
    )
    return 0


def _score(args: argparse.Namespace) -> tuple[Predictor, BatchResult] | int:
    """Loads the model and scores the input; an exit code (after printing why) when either fails."""
    from mlp_jax import compilation_cache
    from mlp_jax.artifact import CheckpointError

    compilation_cache.enable()
    try:
        if args.no_progress:  # MLflow's own bar when a models:/ or runs:/ URI is downloaded
            os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
        predictor = load_predictor(args.model)
    except CheckpointError as e:
        print(f"error: cannot load --model {args.model}: {e}", file=sys.stderr)
        return 1
    try:
        result = predict_csv(
            predictor,
            args.input,
            args.output,
            keep_features=args.keep_features,
            block_bytes=int(args.block_mb * (1 << 20)),
            progress=False if args.no_progress else None,
        )
    except (BatchError, PredictorError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return predictor, result


if __name__ == "__main__":
    raise SystemExit(main())
