"""Rows in, arrays out: synthetic generation, reading CSV/Parquet tables, validation, split.

Column preprocessing (roles, imputation, scaling, category codes) lives in ``mlp_jax.features``.

``python -m mlp_jax.data [--out PATH] [key=value ...]`` writes the synthetic task
(scikit-learn's ``make_classification``) as a CSV with a header and a ``target`` column.
"""

from __future__ import annotations

import codecs
import csv
import dataclasses
import hashlib
import io
import logging
import os
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
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


def hive_keys(folder: Path, f: Path) -> dict[str, str]:
    """The ``key=value`` sub-folders between ``folder`` and its file ``f`` (Hive-style partitioning,
    as ``DataFrame.to_parquet(partition_cols=...)`` writes), as text: ``{"year": "2020"}``."""
    parts = f.relative_to(folder).parts[:-1]
    return dict(part.split("=", 1) for part in parts if "=" in part)


def _pandas_index_columns(schema: Any) -> set[str]:
    """Columns that hold a written pandas index (named in the file's pandas metadata)."""
    meta = schema.pandas_metadata or {}
    return {c for c in meta.get("index_columns", []) if isinstance(c, str)}


def _merged_type(a: Any, b: Any) -> Any:
    """The type both ``a`` and ``b`` read as without loss of meaning, or None (see :func:`parquet_schema`)."""
    import pyarrow as pa

    if pa.types.is_dictionary(a) != pa.types.is_dictionary(b):  # a pandas categorical vs plain values
        a = a.value_type if pa.types.is_dictionary(a) else a
        b = b.value_type if pa.types.is_dictionary(b) else b
    if a == b:
        return a
    try:
        merged = pa.unify_schemas([pa.schema([("c", a)]), pa.schema([("c", b)])], promote_options="permissive")
    except (pa.ArrowTypeError, pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    return merged.field("c").type


def parquet_schema(path: str | os.PathLike) -> Any:
    """The Arrow schema of a Parquet file, or the one schema the files of a Parquet folder share.

    The files of a folder must agree on their columns (names; order may differ) and types.
    Differences that lose nothing are allowed and read as the common type (pyarrow's
    "permissive" promotion): nullability; a column entirely missing in one file (type null);
    integers and floats (read as float64), or different widths of one kind (int32/int64,
    float32/float64, decimal precisions, string/large_string, timestamp units); a pandas
    categorical (dictionary) column and plain values. Text vs numbers, booleans vs numbers,
    a list vs a number and the like are refused. A written pandas index (named in a file's
    pandas metadata) is left out of a folder's schema: it is not data.

    Raises:
      DataError: an unreadable file, a folder without files, or the first file (by sorted name)
        that disagrees with the files before it, and how (its missing or extra columns, or the
        column whose type differs, with both types and files).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = Path(path)
    files = _parquet_files(p) if p.is_dir() else [p]
    if not files:
        raise DataError(f"{p} is a folder without Parquet files")
    schemas = []
    for f in files:
        try:
            schemas.append(pq.read_schema(f))
        except (OSError, ValueError) as e:
            raise DataError(f"cannot read Parquet schema of {f}: {e}") from None
    if not p.is_dir():
        return schemas[0]

    def rel(f: Path) -> str:
        return f.relative_to(p).as_posix()

    def data_fields(schema: Any) -> dict[str, Any]:
        index = _pandas_index_columns(schema)
        return {f.name: f.type for f in schema if f.name not in index}

    first = data_fields(schemas[0])
    types = {n: (t, files[0]) for n, t in first.items()}  # the type so far and the file it comes from
    rule = "the files of a Parquet folder must have the same columns, of the same types"
    for f, schema in zip(files[1:], schemas[1:], strict=True):
        fields = data_fields(schema)
        missing = [n for n in first if n not in fields]
        if missing:
            raise DataError(
                f"{p}: {rel(f)} lacks column(s) {', '.join(map(repr, missing))} that {rel(files[0])} has; {rule}"
            )
        extra = [n for n in fields if n not in first]
        if extra:
            raise DataError(
                f"{p}: {rel(f)} has column(s) {', '.join(map(repr, extra))} that {rel(files[0])} lacks; {rule}"
            )
        for n, t in fields.items():
            known, origin = types[n]
            merged = _merged_type(known, t)
            if merged is None:
                raise DataError(
                    f"{p}: column {n!r} is {_type_name(t)} in {rel(f)} but {_type_name(known)} in {rel(origin)}; {rule} "
                    "(integers and floats may mix)"
                )
            types[n] = (merged, origin if merged == known else f)
    keys = [hive_keys(p, f) for f in files]
    for f, k in zip(files, keys, strict=True):
        if list(k) != list(keys[0]):
            raise DataError(
                f"{p}: {rel(f)} lies under the key=value sub-folder(s) {list(k) or 'none'} but {rel(files[0])} "
                f"under {list(keys[0]) or 'none'}; a partitioned folder needs the same keys for every file"
            )
    clash = [k for k in keys[0] if k in types]
    if clash:
        raise DataError(f"{p}: partition key(s) {', '.join(map(repr, clash))} are also columns of the files")
    for k in keys[0]:  # partition keys are text columns (as for a CSV, the roles decide what they are)
        types[k] = (pa.string(), files[0])
    changed = {n for n, (t, _) in types.items() if t != first.get(n)}
    metadata = dict(schemas[0].metadata or {})
    if changed and b"pandas" in metadata:  # its column types are the first file's: forget the merged ones
        import json

        meta = json.loads(metadata[b"pandas"])
        meta["columns"] = [c for c in meta.get("columns", []) if c.get("name") not in changed]
        metadata[b"pandas"] = json.dumps(meta).encode()
    return pa.schema([pa.field(n, t) for n, (t, _) in types.items()], metadata=metadata or None)


def _read_parquet(path: Path) -> Any:
    """A Parquet file, or a folder's files in sorted order read as their common schema (see :func:`parquet_schema`).

    A partitioned folder's ``key=value`` sub-folders become text columns, as pyarrow's dataset
    reader would add them (:func:`hive_keys`).

    Raises:
      DataError: the folder's files disagree (columns, types, or partition keys).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not path.is_dir():
        return pq.read_table(str(path))
    schema = parquet_schema(path)
    files = _parquet_files(path)
    keyed = hive_keys(path, files[0])  # every file lies under the same keys (parquet_schema checked)
    if not keyed:
        return pq.read_table([str(f) for f in files], schema=schema)
    stored = pa.schema([fld for fld in schema if fld.name not in keyed], metadata=schema.metadata)
    tables = []
    for f in files:
        t = pq.read_table(str(f), schema=stored)
        for k, v in hive_keys(path, f).items():
            t = t.append_column(pa.field(k, pa.string()), pa.array([v] * t.num_rows, pa.string()))
        tables.append(t.select(schema.names))
    return pa.concat_tables(tables)


def decimals_as_floats(data: Any) -> Any:
    """``data`` (a pyarrow Table or RecordBatch) with its decimal columns cast to float64.

    pandas would hold decimals as ``decimal.Decimal`` objects, which read as text (a category);
    as float64 they are numbers, in training and in prediction alike.
    """
    import pyarrow as pa

    schema = data.schema
    for i, f in enumerate(schema):
        if pa.types.is_decimal(f.type):
            schema = schema.set(i, f.with_type(pa.float64()))
    return data if schema == data.schema else data.cast(schema)


def _refuse_unsupported(schema: Any, where: str, dropped: Sequence[str]) -> None:
    """Refuses nested (list, struct, map) and binary columns, unless they are dropped."""
    import pyarrow as pa

    index = _pandas_index_columns(schema)
    for f in schema:
        if f.name in dropped or f.name in index:
            continue
        if pa.types.is_nested(f.type):
            what = "nested values"
        elif pa.types.is_binary(f.type) or pa.types.is_large_binary(f.type) or pa.types.is_fixed_size_binary(f.type):
            what = "binary values (bytes, not text)"
        else:
            continue
        raise DataError(
            f"{where}: column {f.name!r} holds {what} of type {_type_name(f.type)}, which are not supported "
            f"(a feature or target holds numbers, text or booleans); leave it out with data.drop={f.name}"
        )


def _type_name(t: Any) -> str:
    """An Arrow type as a message shows it (``string``, not pyarrow's ``large_string``)."""
    return str(t).replace("large_", "")


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
            names = list(parquet_schema(p).names)
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
    """Names a compressed, UTF-16 or otherwise not UTF-8 file instead of reading its bytes as garbled text.

    Only the first :data:`_HEADER_PREFIX` bytes are checked here; a bad byte further on is
    named by the reader (:func:`_read_error`, :func:`_refuse_binary_text`).
    """
    kind = next((k for magic, k in _COMPRESSED.items() if prefix.startswith(magic)), None)
    if prefix[:3] == b"BZh" and prefix[4:10] == b"1AY&SY":
        kind = "bzip2"
    if kind:
        raise DataError(f"{where} is {kind}-compressed; decompress it first (or save the table as Parquet)")
    if prefix.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise DataError(f"{where} is UTF-16 text; save it as UTF-8")
    try:  # the prefix may end inside a character: an incremental decoder waits for the rest
        codecs.getincrementaldecoder("utf-8")().decode(prefix, final=False)
    except UnicodeDecodeError as e:
        line = prefix.count(b"\n", 0, e.start) + 1
        raise _not_utf8(
            where,
            f"line {line} holds byte 0x{prefix[e.start]:02x}, which is not UTF-8: perhaps Latin-1 or Windows-1252",
        ) from None


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


def csv_row(i: int) -> str:
    """How a message names the CSV row at 0-based data position ``i``: ``data row i+1 (line i+2)``.

    1-based, as the batch command names rows; the header is line 1 (the line is off when an
    earlier value spans lines).
    """
    return f"data row {i + 1} (line {i + 2})"


def row_namer(path: str | os.PathLike) -> Callable[[Any], str]:
    """How training errors name a row of the table read from ``path``, from its 0-based position in it.

    A CSV: :func:`csv_row`; a Parquet file: ``row N`` (1-based); a Parquet folder: ``row N
    of part.parquet`` (1-based within that file, files in sorted order as read).
    """
    p = Path(path)
    if not is_parquet(p):
        return lambda i: csv_row(int(i))
    if not p.is_dir():
        return lambda i: f"row {int(i) + 1}"
    import bisect
    import functools

    @functools.cache
    def files_and_starts() -> tuple[list[Path], list[int]]:  # read when an error needs it
        import pyarrow.parquet as pq

        files = _parquet_files(p)
        sizes = [pq.ParquetFile(f).metadata.num_rows for f in files[:-1]]
        return files, [0, *np.cumsum(sizes, dtype=np.int64).tolist()]

    def name(i: Any) -> str:
        files, starts = files_and_starts()
        k = bisect.bisect_right(starts, int(i)) - 1
        return f"row {int(i) - starts[k] + 1} of {files[k].relative_to(p).as_posix()}"

    return name


def read_table(
    source: str | os.PathLike | bytes,
    string_columns: Sequence[str] = (),
    dropped: Sequence[str] = (),
) -> pd.DataFrame:
    """Reads a whole CSV (path or bytes) or Parquet file/folder into a DataFrame.

    Types are inferred (pyarrow); ``string_columns`` are read as text (so ``007`` stays
    ``"007"``). The null tokens mean missing in every column. Parquet decimals are read as
    float64 numbers; the files of a Parquet folder must agree (:func:`parquet_schema`). Notes
    about what was changed (a dropped index column, renamed empty header cells) are in
    ``frame.attrs["notes"]``.

    ``dropped``: columns the caller leaves out (``data.drop``); they are read, but a Parquet
    column of an unsupported type (nested or binary) is refused only when not among them.

    Raises:
      DataError: unreadable or unparsable file, text that is not UTF-8, a duplicate header
        name, a Parquet folder whose files disagree, or a nested or binary Parquet column.
    """
    import pyarrow as pa
    import pyarrow.csv as pacsv

    from mlp_jax.features import NULL_TOKENS

    where = "the CSV body" if isinstance(source, (bytes, bytearray, memoryview)) else str(source)
    raw = read_header(source)
    names = _column_names(raw)
    try:
        if not isinstance(source, (bytes, bytearray, memoryview)) and is_parquet(source):
            table = _read_parquet(Path(source))
            _refuse_unsupported(table.schema, where, dropped)
            frame = decimals_as_floats(table).to_pandas().reset_index(drop=True)
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
            _refuse_binary_text(table, where)
            frame = table.to_pandas()
            check_closed_quotes(frame, where, source)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, OSError) as e:
        raise _read_error(where, e) from None
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


def _not_utf8(where: str, detail: str) -> DataError:
    return DataError(f"{where} is not UTF-8 text ({detail}); save it as UTF-8")


def _read_error(where: str, e: Exception) -> DataError:
    """pyarrow's error while reading, as a DataError naming the file (bad UTF-8 worded as such)."""
    if "invalid UTF8" in str(e):
        return _not_utf8(where, f"pyarrow: {e}")
    return DataError(f"cannot read {where}: {e}")


def _refuse_binary_text(table: Any, where: str) -> None:
    """A CSV column pyarrow read as binary holds bytes that are not UTF-8 (e.g. Latin-1 'café' past the
    first MiB, which :func:`_refuse_compressed` checks)."""
    import pyarrow as pa

    for name, col in zip(table.column_names, table.columns, strict=True):
        if pa.types.is_binary(col.type) or pa.types.is_large_binary(col.type):
            bad = ((i, v) for i, v in enumerate(col.to_pylist()) if v is not None and not _is_utf8(v))
            i, v = next(bad, (None, b""))
            at = f", {csv_row(i)} holds {v[:40]!r}" if i is not None else ""
            raise _not_utf8(where, f"column {name!r}{at}")


def _is_utf8(b: bytes) -> bool:
    try:
        b.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


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
        raise _read_error(where, e) from None


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
      DataError: names the data row (1-based, and its line) and column where the quote opened.
    """
    if not len(frame):
        return
    row = frame.iloc[-1]
    n = first_row + len(frame)  # 1-based data row of the last row
    for c in frame.columns:
        v = row[c]
        if isinstance(v, str) and ("\n" in v or "\r" in v) and not _ends_with_quote(source):
            lines = len(v.splitlines())
            raise DataError(
                f"{where}: a quote opened in {csv_row(n - 1)}, column {c!r} is never closed; "
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
    #: how errors name a row, from its index label in ``frame`` (the 0-based row as read; see row_namer);
    #: None: ``row <label>``
    row_name: Callable[[Any], str] | None = None


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
    frame = read_table(p, string_columns=text, dropped=cfg.drop)
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
    return Table(frame, str(p.resolve()), file_digest(p), row_namer(p))


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
    row_name = table.row_name or (lambda label: f"row {label}")
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
        _refuse_infinities(frame, cfg, row_name)
        target = TargetSpec.fit(frame, cfg.task, names, row_name)
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
    return _fit_transform(parts, cfg, target, table.source, table.digest, dropped, row_name)


def _refuse_infinities(frame: pd.DataFrame, cfg: DataConfig, row_name: Callable[[Any], str] | None) -> None:
    """Names the first infinite value of a numeric feature column in the file, before the split shuffles the rows.

    Raises:
      FeatureError: as :meth:`Preprocessor.fit` words it, with the row as ``row_name`` names it.
    """
    from mlp_jax.features import _numbers

    skip = {*cfg.target_names, *cfg.drop, *cfg.categorical}
    for c in frame.columns:
        v = frame[c]
        if c not in skip and pd.api.types.is_numeric_dtype(v) and not pd.api.types.is_bool_dtype(v):
            _numbers(v, str(c), 0, row_name)


def _fit_transform(
    parts: dict[str, pd.DataFrame],
    cfg: DataConfig,
    target: TargetSpec | None,
    source: str,
    digest: str,
    dropped: int = 0,
    row_name: Callable[[Any], str] | None = None,
) -> Dataset:
    """Fits the preprocessing (and ``target`` when None) on ``parts["train"]``; transforms all three.

    ``row_name`` words the rows named in errors from the parts' index labels (``features.RowName``).
    """
    try:
        if target is None:
            target = TargetSpec.fit(parts["train"], cfg.task, cfg.target_names, row_name)
        pre = Preprocessor.fit(parts["train"], cfg, row_name)
        xs = {k: pre.transform(f, row_name=row_name).x for k, f in parts.items()}
        ys = {k: target.encode(f, row_name) for k, f in parts.items()}
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
