"""Rows in, arrays out: synthetic generation, reading CSV/Parquet tables, validation, split.

Column preprocessing (roles, imputation, scaling, category codes) lives in ``mlp_jax.features``.

``python -m mlp_jax.data [--out PATH] [key=value ...]`` writes the synthetic task
(scikit-learn's ``make_classification``) as a CSV with a header and a ``target`` column.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import logging
import os
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlp_jax.config import FRIEDMAN1_PATH, SYNTHETIC_PATH, DataConfig
from mlp_jax.features import FeatureError, NumericSpec, Preprocessor, TargetSpec, shown_name

log = logging.getLogger(__name__)


class DataError(ValueError):
    """The data cannot be used; the message names the file, column or count at fault."""


# ----------------------------------------------------------------------------- synthetic


def make_synthetic(cfg: DataConfig) -> pd.DataFrame:
    """The synthetic task as a DataFrame: ``feature_0..feature_{n-1}`` and ``cfg.target``."""
    from sklearn.datasets import make_classification

    x, y = make_classification(
        n_samples=cfg.n_samples,
        n_features=cfg.n_features,
        n_informative=cfg.n_informative,
        n_redundant=cfg.n_redundant,
        n_classes=cfg.n_classes,
        class_sep=cfg.class_sep,
        flip_y=cfg.flip_y,
        random_state=cfg.synthetic_seed,
    )
    frame = pd.DataFrame(x.astype(np.float32), columns=[f"feature_{i}" for i in range(x.shape[1])])
    frame[cfg.target] = y
    return frame


def write_csv_atomic(frame: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Writes ``frame`` to ``path`` through a temporary file in the same folder + rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        frame.to_csv(tmp, index=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def ensure_synthetic(cfg: DataConfig) -> bool:
    """Generates the synthetic CSV when ``cfg.path`` is the default synthetic path and missing.

    Returns True when it wrote the file. Any other missing path is left for
    :func:`load_table` to report.
    """
    if Path(cfg.path).exists():
        return False
    if Path(cfg.path) == Path(SYNTHETIC_PATH):
        write_csv_atomic(make_synthetic(cfg), cfg.path)
        return True
    if Path(cfg.path) == Path(FRIEDMAN1_PATH):
        write_csv_atomic(make_friedman1(cfg.synthetic_seed), cfg.path)
        return True
    return False


def make_friedman1(seed: int = 42, n_samples: int = 20_000) -> pd.DataFrame:
    """Friedman #1 regression (scikit-learn's ``make_friedman1``, 10 features of which 5 matter, noise 1.0).

    ``y = 10 sin(pi x0 x1) + 20 (x2 - 0.5)^2 + 10 x3 + 5 x4 + N(0, 1)``; the noise caps R² near 0.96.
    """
    from sklearn.datasets import make_friedman1 as friedman

    x, y = friedman(n_samples=n_samples, n_features=10, noise=1.0, random_state=seed)
    frame = pd.DataFrame(x.astype(np.float32), columns=[f"x{i}" for i in range(x.shape[1])])
    frame["y"] = y
    return frame


# ----------------------------------------------------------------------------- reading tables
#
# One dialect everywhere (training, the batch command, HTTP CSV bodies): UTF-8, comma, a header
# row; a byte-order mark is dropped; duplicate header names are refused (checked on the raw
# header, before anything renames them); an empty header cell is named ``unnamed_<i>``, and an
# unnamed first column that counts 0..n-1 (a written pandas index) is dropped. In feature columns
# the strings in ``features.NULL_TOKENS`` mean missing.

PARQUET_SUFFIXES = (".parquet", ".pq")
_HEADER_PREFIX = 1 << 20  # bytes read to find the header row


def is_parquet(path: str | os.PathLike) -> bool:
    """A ``.parquet``/``.pq`` file, or a folder (of Parquet files)."""
    p = Path(path)
    return p.suffix.lower() in PARQUET_SUFFIXES or p.is_dir()


def _parquet_files(folder: Path) -> list[Path]:
    # pyarrow's dataset reader skips names starting with "." or "_" (e.g. _SUCCESS); so do we
    return sorted(
        f
        for f in folder.rglob("*")
        if f.is_file() and not any(part.startswith((".", "_")) for part in f.relative_to(folder).parts)
    )


def file_digest(path: str | os.PathLike) -> str:
    """sha256 (first 16 hex digits) of the file's bytes; of a folder: every data file's path + bytes, sorted."""
    p = Path(path)
    h = hashlib.sha256()
    for f in _parquet_files(p) if p.is_dir() else [p]:
        if p.is_dir():
            h.update(f.relative_to(p).as_posix().encode() + b"\0")
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


def read_header(source: str | os.PathLike | bytes) -> list[str]:
    """The raw header names of a CSV (path or bytes; BOM stripped) or of a Parquet file/folder.

    Raises:
      DataError: unreadable file, no header row, or a header that names a column twice.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        prefix, where = bytes(source[:_HEADER_PREFIX]), "the CSV body"
        _refuse_compressed(prefix, where)
        names = _csv_header(prefix)
    else:
        p = Path(source)
        where = str(p)
        if is_parquet(p):
            import pyarrow.parquet as pq

            try:
                names = list(pq.read_schema(_parquet_files(p)[0] if p.is_dir() else p).names)
            except (OSError, IndexError, ValueError) as e:
                raise DataError(f"cannot read Parquet schema of {p}: {e}") from None
        else:
            with open(p, "rb") as f:
                prefix = f.read(_HEADER_PREFIX)
            _refuse_compressed(prefix, where)
            names = _csv_header(prefix)
    if names is None:
        raise DataError(f"{where} has no header row")
    _check_duplicates(names, where)
    return names


#: Magic bytes of compressed files (read as CSV they give garbled headers and parse errors).
_COMPRESSED = {b"\x1f\x8b": "gzip", b"PK\x03\x04": "zip", b"\xfd7zXZ\x00": "xz", b"(\xb5/\xfd": "zstd"}


def _refuse_compressed(prefix: bytes, where: str) -> None:
    """Names a compressed or UTF-16 file instead of reading its bytes as a garbled CSV header."""
    kind = next((k for magic, k in _COMPRESSED.items() if prefix.startswith(magic)), None)
    if prefix[:3] == b"BZh" and prefix[4:10] == b"1AY&SY":
        kind = "bzip2"
    if kind:
        raise DataError(f"{where} is {kind}-compressed; decompress it first (or save the table as Parquet)")
    if prefix.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise DataError(f"{where} is UTF-16 text; save it as UTF-8")


def _csv_header(prefix: bytes) -> list[str] | None:
    text = prefix.decode("utf-8-sig", errors="replace")
    try:
        return next(csv.reader(io.StringIO(text)))
    except StopIteration:
        return None
    except csv.Error as e:
        raise DataError(f"cannot parse the CSV header: {e}") from None


def _check_duplicates(names: Sequence[str], where: str) -> None:
    counts = Counter(n for n in names if n != "")
    dup = [n for n, k in counts.items() if k > 1]
    if dup:
        raise DataError(f"{where}: the header names column(s) more than once: {', '.join(map(repr, dup))}")


def _column_names(raw: Sequence[str]) -> list[str]:
    return [n if n != "" else f"unnamed_{i}" for i, n in enumerate(raw)]


def _csv_input(source: str | os.PathLike | bytes) -> Any:
    return io.BytesIO(bytes(source)) if isinstance(source, (bytes, bytearray, memoryview)) else str(source)


def delimiter_hint(columns: list[str]) -> str:
    """``"; ..."`` advice when a CSV header read as one column holds another delimiter, else ``""``.

    A semicolon- or tab-separated file read as CSV has a single column whose name is the whole
    header line (``x1;x2;label``), so every named column looks missing.
    """
    if len(columns) != 1:
        return ""
    for sep, name in ((";", "semicolons"), ("\t", "tabs"), ("|", "pipes")):
        if sep in columns[0]:
            return (
                f" (the header is one column holding {name}: the file looks {name}-separated; CSV files "
                "must be comma-separated, e.g. re-save it with pandas: "
                f"pd.read_csv(path, sep={sep!r}).to_csv(path, index=False), or as Parquet)"
            )
    return ""


def read_table(
    source: str | os.PathLike | bytes,
    string_columns: Sequence[str] = (),
) -> pd.DataFrame:
    """Reads a whole CSV (path or bytes) or Parquet file/folder into a DataFrame.

    Types are inferred (pyarrow); ``string_columns`` are read as text (so ``007`` stays
    ``"007"``). The null tokens mean missing in every column. Notes about what was changed
    (a dropped index column, renamed empty header cells) are in ``frame.attrs["notes"]``.

    Raises:
      DataError: unreadable or unparsable file, or a duplicate header name.
    """
    import pyarrow as pa
    import pyarrow.csv as pacsv

    from mlp_jax.features import NULL_TOKENS

    where = "the CSV body" if isinstance(source, (bytes, bytearray, memoryview)) else str(source)
    raw = read_header(source)
    names = _column_names(raw)
    try:
        if not isinstance(source, (bytes, bytearray, memoryview)) and is_parquet(source):
            import pyarrow.parquet as pq

            table = pq.read_table(str(source))
            frame = table.to_pandas().reset_index(drop=True)
            for c in frame.columns:  # the CSV dialect's null tokens mean missing here too
                if frame[c].dtype == object or pd.api.types.is_string_dtype(frame[c]):
                    frame[c] = frame[c].mask(frame[c].isin(NULL_TOKENS))
            for c in string_columns:
                if c in frame.columns and not pd.api.types.is_string_dtype(frame[c]):
                    frame[c] = frame[c].astype(object).where(frame[c].isna(), frame[c].astype(str))
        else:
            table = pacsv.read_csv(
                _csv_input(source),
                read_options=pacsv.ReadOptions(column_names=names, skip_rows=1),
                convert_options=pacsv.ConvertOptions(
                    column_types={c: pa.string() for c in string_columns if c in names},
                    null_values=list(NULL_TOKENS),
                    strings_can_be_null=True,
                ),
            )
            frame = table.to_pandas()
            check_closed_quotes(frame, where, source)
    except (pa.ArrowInvalid, OSError) as e:
        raise DataError(f"cannot read {where}: {e}") from None
    notes = []
    renamed = [n for r, n in zip(raw, names, strict=True) if r == ""]
    if raw and raw[0] == "" and len(frame) and _is_counter(frame[names[0]]):
        frame = frame.drop(columns=[names[0]])
        notes.append(f"dropped the unnamed first column of {where}: it counts 0..{len(frame) - 1} (a written index)")
        renamed = renamed[1:]
    if renamed:
        notes.append(f"{where}: empty header cell(s) named {', '.join(renamed)}")
    for n in notes:
        log.info(n)
    frame.attrs["notes"] = notes
    return frame


def _is_counter(values: pd.Series) -> bool:
    if not pd.api.types.is_integer_dtype(values):
        return False
    return bool(np.array_equal(values.to_numpy(), np.arange(len(values))))


def iter_csv_for_prediction(
    source: str | os.PathLike | bytes,
    feature_columns: Sequence[str],
    block_bytes: int = 1 << 22,
) -> Iterator[pd.DataFrame]:
    """Streams a CSV for batch prediction, in blocks of about ``block_bytes``.

    Every column is read as text, with NO null parsing, so a column that is only passed
    through keeps ``NA``, ``null``, ``N/A``, ``NaN`` byte for byte. In ``feature_columns`` the
    null tokens become missing (None); the preprocessor parses their numbers, so a bad value
    is reported by column and row.

    Raises:
      DataError: duplicate header names, a feature column absent from the header, or a parse error.
    """
    import pyarrow as pa
    import pyarrow.csv as pacsv

    from mlp_jax.features import NULL_TOKENS

    where = "the CSV body" if isinstance(source, (bytes, bytearray, memoryview)) else str(source)
    names = _column_names(read_header(source))
    absent = [c for c in feature_columns if c not in names]
    if absent:
        raise DataError(f"{where} lacks feature column(s): {', '.join(map(repr, absent))}{delimiter_hint(names)}")
    wanted = set(feature_columns)
    try:
        reader = pacsv.open_csv(
            _csv_input(source),
            read_options=pacsv.ReadOptions(column_names=names, skip_rows=1, block_size=block_bytes),
            convert_options=pacsv.ConvertOptions(
                column_types={c: pa.string() for c in names}, null_values=[], strings_can_be_null=False
            ),
        )
        last: pd.DataFrame | None = None
        rows = 0
        for batch in reader:
            frame = batch.to_pandas()
            for c in wanted:
                frame[c] = frame[c].astype(object).mask(frame[c].isin(NULL_TOKENS), None)
            if last is not None:
                yield last
                rows += len(last)
            last = frame
        if last is not None:
            check_closed_quotes(last, where, source, rows)
            yield last
    except pa.ArrowInvalid as e:
        raise DataError(f"cannot read {where}: {e}") from None


def _ends_with_quote(source: str | os.PathLike | bytes) -> bool:
    """Whether the CSV's last non-blank byte is a double quote (a closed quoted value)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        tail = bytes(source[-64:])
    else:
        with open(source, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64))
            tail = f.read()
    return tail.rstrip().endswith(b'"')


def check_closed_quotes(frame: pd.DataFrame, where: str, source: str | os.PathLike | bytes, first_row: int = 0) -> None:
    """Refuses a CSV whose last value runs to the end of the file across lines: an unclosed quote.

    pyarrow reads ``...,"red`` followed by more lines as one value that swallows every later
    line, so the rows after it would silently disappear. A legitimate multi-line value ends
    with its closing quote (the file's last byte then is ``"``), not at the end of the file.

    Raises:
      DataError: names the data row and column where the quote opened.
    """
    if not len(frame):
        return
    row = frame.iloc[-1]
    for c in frame.columns:
        v = row[c]
        if isinstance(v, str) and ("\n" in v or "\r" in v) and not _ends_with_quote(source):
            lines = len(v.splitlines())
            raise DataError(
                f"{where}: a quote opened in data row {first_row + len(frame) - 1}, column {c!r} is never closed; "
                f"the value runs to the end of the file over {lines} lines (starting {v[:30]!r}), so those rows "
                "would be lost: close the quote"
            )


def read_csv_for_prediction(source: str | os.PathLike | bytes, feature_columns: Sequence[str]) -> pd.DataFrame:
    """:func:`iter_csv_for_prediction` in one frame."""
    parts = list(iter_csv_for_prediction(source, feature_columns))
    if not parts:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in _column_names(read_header(source))})
    return pd.concat(parts, ignore_index=True)


@dataclass(frozen=True)
class Table:
    """A table as read (every column, original values), where it came from and its digest."""

    frame: pd.DataFrame
    source: str
    digest: str  # sha256 of the file bytes (first 16 hex digits)


def load_table(cfg: DataConfig) -> Table:
    """Reads ``cfg.path`` (CSV or Parquet) with the checks every run needs.

    Raises:
      DataError: missing or empty file, no data rows, missing target or feature columns.
    """
    p = Path(cfg.path)
    if not p.exists():
        raise DataError(f"data file not found: {p.resolve()}")
    if p.is_dir() and not _parquet_files(p):
        raise DataError(f"data path is a directory without Parquet files: {p.resolve()}")
    if p.is_file() and p.stat().st_size == 0:
        raise DataError(f"data file is empty: {p.resolve()}")
    text = list(cfg.categorical) + (list(cfg.target_names) if cfg.task == "classification" else [])
    frame = read_table(p, string_columns=text)
    if frame.shape[0] == 0:
        raise DataError(f"data file {p} has a header but 0 data rows")
    absent = [t for t in cfg.target_names if t not in frame.columns]
    if absent:
        raise DataError(
            f"target column {absent[0]!r} not found in {p}; columns are: {', '.join(shown_name(str(c)) for c in frame.columns)}"
            f"{delimiter_hint([str(c) for c in frame.columns])}"
        )
    if frame.shape[1] - len(cfg.target_names) == 0:
        raise DataError(f"{p} has no feature columns besides the target {cfg.target!r}")
    return Table(frame, str(p.resolve()), file_digest(p))


# ----------------------------------------------------------------------------- split + preprocess


@dataclass(frozen=True)
class Standardizer:
    """``(x - mean) / scale``: the pre-``features`` scaling, kept for checkpoints written with it."""

    mean: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray) -> Standardizer:
        mean = x.mean(axis=0, dtype=np.float64)
        std = x.std(axis=0, dtype=np.float64)
        std[std < 1e-12] = 1.0  # constant columns pass through centred
        return cls(mean.astype(np.float32), std.astype(np.float32))

    def transform(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / self.scale).astype(np.float32)

    def to_dict(self) -> dict[str, list[float]]:
        return {"mean": self.mean.tolist(), "scale": self.scale.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Standardizer:
        return cls(np.asarray(d["mean"], np.float32), np.asarray(d["scale"], np.float32))


@dataclass(frozen=True)
class Dataset:
    """Preprocessed splits plus everything a predictor needs (preprocessing, target meaning)."""

    x_train: np.ndarray  # [rows, n_dense + n_categorical] float32 (see features.Preprocessor)
    y_train: np.ndarray  # classification: int32 [rows] indices into classes; regression: float32 [rows, targets]
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    feature_names: tuple[str, ...]  # raw input columns, what a request sends (preprocessor.input_columns)
    classes: tuple[Any, ...]  # original labels, index i = class i; () for regression
    preprocessor: Preprocessor
    target: TargetSpec
    source: str
    digest: str
    dropped_target_rows: int = 0  # rows without a target value, left out
    test_frame: pd.DataFrame | None = None  # raw test rows (features + targets), index = 0-based data row

    @property
    def task(self) -> str:
        return self.target.task

    @property
    def target_names(self) -> tuple[str, ...]:
        return self.target.names

    @property
    def n_features(self) -> int:
        return self.x_train.shape[1]

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def n_targets(self) -> int:
        return len(self.target.names)

    def split_sizes(self) -> dict[str, int]:
        return {"train": len(self.y_train), "val": len(self.y_val), "test": len(self.y_test)}

    @property
    def standardizer(self) -> Standardizer:
        """Compatibility view for code written before ``preprocessor`` (all-numeric tables only).

        Equals the preprocessor only without missing indicators, booleans and categories, and
        ignores its clipping (values beyond ``data.clip`` scaled units) and constant columns
        (scale 1 here, 0 there). New code: ``preprocessor.to_dict()`` / ``.transform``.
        """
        specs = self.preprocessor.columns
        if not all(isinstance(s, NumericSpec) and not s.indicator for s in specs):
            raise DataError(
                "dataset.standardizer only describes all-numeric tables without gaps; use dataset.preprocessor"
            )
        mean = np.array([s.center for s in specs], np.float32)
        scale = np.array([s.scale if s.scale > 0 else 1.0 for s in specs], np.float32)
        return Standardizer(mean, scale)


def split(table: Table, cfg: DataConfig, seed: int) -> Dataset:
    """Drops rows without a target, splits (stratified for classification), fits on train only.

    Raises:
      DataError: a problem with a column (named) or too few rows to split.
    """
    from sklearn.model_selection import train_test_split

    frame, names = table.frame, cfg.target_names
    has_target = frame[list(names)].notna().all(axis=1).to_numpy()
    dropped = int((~has_target).sum())
    if dropped:
        frame = frame[has_target]
    if cfg.missing == "error":
        feats = frame.drop(columns=[*names, *[c for c in cfg.drop if c in frame.columns]])
        gaps = {c: int(n) for c, n in feats.isna().sum().items() if n and c not in cfg.categorical}
        gaps = {c: n for c, n in gaps.items() if not _is_text_column(feats[c])}
        if gaps:
            where = ", ".join(f"{c} ({n} rows)" for c, n in gaps.items())
            raise DataError(f"{table.source}: missing values in feature column(s): {where}")
    try:
        target = TargetSpec.fit(frame, cfg.task, names)
        y_all = target.encode(frame) if cfg.task == "classification" else None
    except FeatureError as e:
        raise DataError(f"{table.source}: {e}") from None
    n = len(frame)
    idx = np.arange(n)
    try:
        if cfg.task == "classification":
            n_cls = len(target.classes)
            n_test = max(round(cfg.test_fraction * n), n_cls)
            n_val = max(round(cfg.val_fraction * n), n_cls)
            counts = np.bincount(y_all, minlength=n_cls)
            if counts.min() < 3 or n - n_test - n_val < n_cls:
                rare = target.classes[int(np.argmin(counts))]
                raise DataError(
                    f"{table.source}: too few rows to split stratified into train/val/test "
                    f"({n} rows; class {rare!r} has {counts.min()}; each class needs at least 3)"
                )
            rest, test = train_test_split(idx, test_size=n_test, stratify=y_all, random_state=seed)
            train, val = train_test_split(rest, test_size=n_val, stratify=y_all[rest], random_state=seed + 1)
        else:
            n_test, n_val = max(round(cfg.test_fraction * n), 1), max(round(cfg.val_fraction * n), 1)
            if n - n_test - n_val < 2:
                raise DataError(f"{table.source}: too few rows to split into train/val/test ({n} rows with a target)")
            rest, test = train_test_split(idx, test_size=n_test, random_state=seed)
            train, val = train_test_split(rest, test_size=n_val, random_state=seed + 1)
    except ValueError as e:
        if isinstance(e, DataError):
            raise
        raise DataError(f"{table.source}: cannot split: {e}") from None
    parts = {k: frame.iloc[ix] for k, ix in (("train", train), ("val", val), ("test", test))}
    if cfg.task == "regression":
        target = None  # statistics from train only
    return _fit_transform(parts, cfg, target, table.source, table.digest, dropped)


def _fit_transform(
    parts: dict[str, pd.DataFrame],
    cfg: DataConfig,
    target: TargetSpec | None,
    source: str,
    digest: str,
    dropped: int = 0,
) -> Dataset:
    """Fits the preprocessing (and ``target`` when None) on ``parts["train"]``; transforms all three."""
    try:
        if target is None:
            target = TargetSpec.fit(parts["train"], cfg.task, cfg.target_names)
        pre = Preprocessor.fit(parts["train"], cfg)
        xs = {k: pre.transform(f).x for k, f in parts.items()}
        ys = {k: target.encode(f) for k, f in parts.items()}
    except FeatureError as e:
        raise DataError(f"{source}: {e}") from None
    return Dataset(
        xs["train"],
        ys["train"],
        xs["val"],
        ys["val"],
        xs["test"],
        ys["test"],
        feature_names=pre.input_columns,
        classes=target.classes,
        preprocessor=pre,
        target=target,
        source=source,
        digest=digest,
        dropped_target_rows=dropped,
        test_frame=parts["test"].copy(),
    )


def from_frames(
    train: pd.DataFrame,
    val: pd.DataFrame,
    test: pd.DataFrame,
    cfg: DataConfig,
    source: str = "frames",
) -> Dataset:
    """A :class:`Dataset` from a split made elsewhere (e.g. a benchmark's shared splits).

    Everything is fitted on ``train`` only: the target (classes, or regression mean/scale) and
    the preprocessing (``cfg``'s roles, imputation, scaling, categories); ``val`` and ``test`` are
    only transformed. Rows must all have a target value. ``digest`` is a hash of the three
    frames' contents, so a checkpoint is tied to these rows.

    Raises:
      DataError: a missing target column or value, a validation/test class unseen in
        training, or a column problem (named).
    """
    parts = {"train": train, "val": val, "test": test}
    for name, f in parts.items():
        absent = [t for t in cfg.target_names if t not in f.columns]
        if absent:
            raise DataError(f"{source}: target column {absent[0]!r} not in the {name} frame")
        if len(f) == 0 or not f[list(cfg.target_names)].notna().all().all():
            raise DataError(f"{source}: the {name} frame is empty or has rows without a target value")
    h = hashlib.sha256()
    for f in parts.values():
        h.update(pd.util.hash_pandas_object(f, index=False).to_numpy().tobytes())
    return _fit_transform(parts, cfg, None, source, h.hexdigest()[:16])


def _is_text_column(values: pd.Series) -> bool:
    return not (pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values) or values.dtype == object)


def describe(dataset: Dataset) -> list[str]:
    """Lines for the start of a run: source, rows, dropped rows, target, then the column roles."""
    lines = []
    if dataset.dropped_target_rows:
        lines.append(f"data: left out {dataset.dropped_target_rows} row(s) without a target value")
    if dataset.task == "classification":
        lines.append(f"target: {dataset.target_names[0]!r}, {dataset.n_classes} classes {list(dataset.classes)}")
    else:
        lines.append(
            "target: regression on "
            + ", ".join(
                f"{n!r} (mean {m:.4g}, std {s:.4g})"
                for n, m, s in zip(dataset.target.names, dataset.target.mean, dataset.target.scale, strict=True)
            )
        )
    return lines + dataset.preprocessor.describe_roles()


def prepare(cfg: DataConfig, seed: int, verbose: bool = True) -> Dataset:
    """Generates the synthetic CSV if needed, reads, validates, splits and preprocesses.

    With ``verbose`` prints what was decided (dropped columns/rows, target, column roles).
    """
    ensure_synthetic(cfg)
    table = load_table(cfg)
    dataset = split(table, cfg, seed)
    if verbose:
        for line in [*table.frame.attrs.get("notes", []), *describe(dataset)]:
            print(line, flush=True)
    return dataset


def main(argv: list[str] | None = None) -> int:
    """``python -m mlp_jax.data [--out PATH] [data.key=value ...]``: writes the synthetic CSV."""
    from mlp_jax.config import Config, ConfigError, apply_overrides, help_text

    argv = list(sys.argv[1:] if argv is None else argv)
    if "-h" in argv or "--help" in argv:
        print(__doc__.strip())
        print(help_text(Config()))
        return 0
    out = SYNTHETIC_PATH
    if "--out" in argv:
        i = argv.index("--out")
        if i + 1 >= len(argv):
            print("error: --out needs a path", file=sys.stderr)
            return 2
        out = argv[i + 1]
        del argv[i : i + 2]
    try:
        cfg = apply_overrides(Config(), argv).data
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    path = write_csv_atomic(make_synthetic(dataclasses.replace(cfg, path=out)), out)
    print(f"wrote {cfg.n_samples} rows x {cfg.n_features} features, {cfg.n_classes} classes -> {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
