"""Batch prediction over CSV files: ``python -m mlp_jax.predict --model MODEL --input in.csv --output out.csv``.

The input is streamed in blocks (memory stays bounded whatever the file size) with
pyarrow's CSV reader. Feature columns are found by name, in any order; a missing one is
an error that names it, and every other column (an id, say) is passed through verbatim.
The output holds the passed-through columns, ``prediction`` (the original class label)
and one ``proba_<class>`` column per class. It is written to a temporary file beside the
output and renamed at the end, so a failure never leaves a half-written file (an
existing output stays as it was). Scoring goes through the same
:class:`~mlp_jax.predictor.Predictor` as the service and the MLflow pyfunc, so the
numbers are the same.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from mlp_jax.predictor import Predictor

#: Bytes of CSV parsed per block; one block is scored and written before the next is held.
DEFAULT_BLOCK_BYTES = 8 << 20


class BatchError(ValueError):
    """The input cannot be scored; the message names the file, column or row at fault."""


@dataclass(frozen=True)
class BatchResult:
    rows: int
    seconds: float
    output: Path
    columns: list[str]

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else float("inf")


def read_header(path: Path) -> list[str]:
    """Column names from the first line (CSV quoting respected)."""
    with open(path, newline="", encoding="utf-8") as f:
        try:
            header = next(csv.reader(f))
        except StopIteration:
            raise BatchError(f"input file is empty: {path}") from None
        except (csv.Error, UnicodeDecodeError) as e:
            raise BatchError(f"cannot read the header of {path}: {e}") from None
    duplicates = sorted({c for c in header if header.count(c) > 1})
    if duplicates:
        raise BatchError(f"{path}: duplicate column name(s) in the header: {', '.join(duplicates)}")
    return header


def plan_columns(header: list[str], predictor: Predictor, keep_features: bool) -> tuple[list[str], list[str]]:
    """``(passed-through columns, output columns)``; BatchError names missing or clashing columns."""
    features = set(predictor.feature_names)
    missing = [f for f in predictor.feature_names if f not in header]
    if missing:
        raise BatchError(
            f"missing feature column(s): {', '.join(missing)} (the model expects {predictor.n_features} columns: "
            f"{', '.join(predictor.feature_names)})"
        )
    passed = [c for c in header if keep_features or c not in features]
    produced = ["prediction", *predictor.probability_columns()]
    clash = [c for c in passed if c in produced]
    if clash:
        raise BatchError(f"input column(s) {', '.join(clash)} would clash with the output columns; rename them")
    return passed, passed + produced


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
      keep_features: also copy the feature columns to the output.
      block_bytes: CSV bytes per block (bounds memory).
      progress: show a progress bar (None: only on a terminal).

    Raises:
      BatchError: missing/empty input, missing feature column, non-numeric, missing or
        non-finite feature value (with its row), output that would overwrite the input.
    """
    from tqdm import tqdm

    src, dst = Path(input_path), Path(output_path)
    if not src.is_file():
        raise BatchError(f"input file not found: {src.resolve()}" if not src.exists() else f"not a file: {src}")
    if dst.exists() and dst.resolve() == src.resolve():
        raise BatchError(f"the output {dst} would overwrite the input; choose another path")
    if dst.is_dir():
        raise BatchError(f"the output {dst} is a directory; give a file path")
    header = read_header(src)
    passed, out_columns = plan_columns(header, predictor, keep_features)
    features = list(predictor.feature_names)
    types: dict[str, pa.DataType] = {c: pa.string() for c in header}  # passed through verbatim
    types.update({f: pa.float64() for f in features})  # parsed like the training CSV: f64, then f32
    label_type = pa.string() if any(isinstance(c, str) for c in predictor.classes) else pa.int64()
    classes = np.asarray(predictor.classes, dtype=object if label_type == pa.string() else np.int64)
    schema = pa.schema(
        [pa.field(c, pa.float64() if c in predictor.feature_names else pa.string()) for c in passed]
        + [pa.field("prediction", label_type)]
        + [pa.field(c, pa.float32()) for c in predictor.probability_columns()]
    )

    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    start = time.perf_counter()
    rows = 0
    try:
        with (
            pa.OSFile(str(src)) as stream,
            pacsv.CSVWriter(str(tmp), schema) as writer,
            tqdm(
                total=src.stat().st_size,
                unit="B",
                unit_scale=True,
                desc=f"predict {src.name}",
                disable=None if progress is None else not progress,
                file=sys.stderr,
            ) as bar,
        ):
            try:
                reader = pacsv.open_csv(
                    stream,
                    read_options=pacsv.ReadOptions(block_size=block_bytes),
                    convert_options=pacsv.ConvertOptions(column_types=types, strings_can_be_null=True),
                )
            except pa.ArrowInvalid as e:
                raise BatchError(f"{src}: {e}") from None
            while True:
                try:
                    batch = reader.read_next_batch()
                except StopIteration:
                    break
                except pa.ArrowInvalid as e:  # a non-numeric feature value, a ragged row
                    raise BatchError(f"{src}: {e}") from None
                x = feature_matrix(batch, features, rows, src)
                probs = predictor.predict_proba(x)
                arrays = [batch.column(c) for c in passed]
                arrays.append(pa.array(classes[probs.argmax(axis=1)], type=label_type))
                arrays.extend(pa.array(probs[:, k]) for k in range(probs.shape[1]))
                writer.write_batch(pa.RecordBatch.from_arrays(arrays, schema=schema))
                rows += batch.num_rows
                bar.update(stream.tell() - bar.n)
                bar.set_postfix(rows=f"{rows:,}", refresh=False)
        if rows == 0:
            raise BatchError(f"{src} has a header but 0 data rows")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; the output is an ordinary file
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return BatchResult(rows, time.perf_counter() - start, dst, out_columns)


def feature_matrix(batch: pa.RecordBatch, features: list[str], offset: int, src: Path) -> np.ndarray:
    """``[rows, features]`` float32; BatchError names the first missing or non-finite value (1-based data row)."""
    cols = []
    for f in features:
        col = batch.column(f)
        if col.null_count:
            row = offset + int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0]) + 1
            raise BatchError(f"{src}: missing value in feature column {f!r} at data row {row}")
        cols.append(col.to_numpy())
    with np.errstate(over="ignore"):  # past float32's range becomes inf, reported just below
        x = np.stack(cols, axis=1).astype(np.float32)
    if not np.isfinite(x).all():
        r, c = np.argwhere(~np.isfinite(x))[0]
        raise BatchError(
            f"{src}: non-finite value (NaN, inf, or beyond float32's range) in feature column "
            f"{features[c]!r} at data row {offset + int(r) + 1}"
        )
    return x


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m mlp_jax.predict", description="Score a CSV file, streamed in blocks, into a new CSV."
    )
    p.add_argument("--model", required=True, help="workdir, step folder or models:/ URI")
    p.add_argument("--input", required=True, help="CSV with a header and the model's feature columns")
    p.add_argument("--output", required=True, help="CSV to write (replaced atomically)")
    p.add_argument("--keep-features", action="store_true", help="also copy the feature columns to the output")
    p.add_argument("--block-mb", type=float, default=DEFAULT_BLOCK_BYTES / (1 << 20), help="CSV block size in MiB")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    if args.block_mb <= 0:
        p.error(f"--block-mb must be positive, got {args.block_mb}")
    return args


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (1 for a bad model or input, 2 for bad arguments)."""
    args = parse_args(argv)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from mlp_jax import compilation_cache
    from mlp_jax.artifact import CheckpointError
    from mlp_jax.predictor import PredictorError

    compilation_cache.enable()
    try:
        predictor = Predictor.load(args.model)
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
    print(
        f"wrote {result.rows:,} rows ({', '.join(result.columns[-1 - len(predictor.classes) :])} and "
        f"{len(result.columns) - 1 - len(predictor.classes)} passed-through column(s)) to {result.output} "
        f"in {result.seconds:.2f} s ({result.rows_per_second:,.0f} rows/s)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
