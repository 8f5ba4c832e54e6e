"""Columns in, one float32 matrix out: roles, imputation, scaling, category codes, targets.

Fitted on the training split only, stored as plain JSON (``to_dict`` / ``from_dict``), and
applied on raw values at prediction time (numbers, numeric text from CSV bodies, text, None/NaN).
No JAX here: this runs on the host, in the trainer, the predictor and the batch command alike.

Roles (inferred per column, printed by :meth:`Preprocessor.describe_roles`):
- **numeric** (int/float): missing values take the training median, plus a 0/1 "was missing"
  input for every column that had gaps in training. Scaling is robust by default:
  ``(x - median) / (IQR / 1.349)`` (falls back to the standard deviation when the IQR is 0),
  then clipped to ``[-clip, clip]``; on a Gaussian column that is plain standardisation
  (IQR / 1.349 = std, and |z| > 5 has probability 6e-7), while an outlier can neither squash
  the bulk of a column nor blow up an activation (RealMLP, arXiv 2407.04491, scales robustly and
  clips for the same reason). A column constant in training gets scale 0: it outputs exactly 0
  whatever value comes in, so it has no effect (it stays in the inputs so the request schema is
  the table's).
- **boolean** (bool dtype, or text whose two values are true/false, yes/no, t/f, y/n, on/off or
  0/1, any case): 0.0 / 1.0, not scaled. Missing is imputed with the training majority value,
  with a "was missing" input when training had gaps (the same rule as numbers).
- **categorical** (text, or named in ``data.categorical``): codes into a vocabulary of the
  training values seen at least ``min_category_count`` times. Slot 0 = missing, slot 1 =
  unknown (rare in training, or never seen), slots 2.. = the vocabulary in sorted order. The
  model one-hots a column with at most ``onehot_max_cardinality`` slots and embeds the others,
  ``min(embedding_max_dim, round(1.6 * slots ** 0.56))`` wide (fast.ai's ``emb_sz_rule``).

``Transformed.x`` is ``[rows, n_dense + n_categorical]``: first the dense block (scaled numbers
in column order, then their missing indicators, then booleans and their indicators; names in
:attr:`Preprocessor.dense_names`), then one column per categorical holding its integer code as
a float (exact for codes below 2**24).

The CSV null tokens (:data:`NULL_TOKENS`, pyarrow's defaults: ``''``, ``NA``, ``null``,
``NaN``, ...) mean "missing" in every feature column, whether the value came from a CSV file,
Parquet, a JSON request or a CSV body, so training and prediction agree.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache, cached_property
from typing import Any

import numpy as np
import pandas as pd

from mlp_jax.config import DataConfig

FORMAT = 1
KIND = "mlp_jax.features.Preprocessor"

#: pyarrow's default CSV null values: these strings mean "missing" in any feature column.
NULL_TOKENS: tuple[str, ...] = (
    "",
    "#N/A",
    "#N/A N/A",
    "#NA",
    "-1.#IND",
    "-1.#QNAN",
    "-NaN",
    "-nan",
    "1.#IND",
    "1.#QNAN",
    "N/A",
    "NA",
    "NULL",
    "NaN",
    "n/a",
    "nan",
    "null",
)
_BOOL_PAIRS: tuple[tuple[str, str], ...] = (
    ("false", "true"),
    ("no", "yes"),
    ("f", "t"),
    ("n", "y"),
    ("off", "on"),
    ("0", "1"),
)
_BOOL_TOKENS: dict[str, float] = {t: float(v) for pair in _BOOL_PAIRS for v, t in enumerate(pair)}
#: a text column with at least this share of distinct values (and more than MIN_ID_UNIQUE of them)
#: looks like an identifier or free text: refused, with a hint to drop it.
ID_UNIQUE_RATIO = 0.95
MIN_ID_UNIQUE = 20
MISSING_SLOT, UNKNOWN_SLOT = 0, 1
_IQR_TO_STD = 1.349  # IQR of a standard normal
#: Largest regression target magnitude: squared errors of larger values overflow float64 (1e308).
MAX_TARGET_MAGNITUDE = 1e150


class FeatureError(ValueError):
    """A column or value cannot be used; the message names the column (and the row).

    ``row`` is the 0-based position in the frame given (plus ``row_offset``); the message
    names the row that way too, or as ``row_name`` says where one was given (see :data:`RowName`).
    """

    def __init__(self, message: str, column: str | None = None, row: int | None = None):
        super().__init__(message)
        self.column = column
        self.row = row


# ----------------------------------------------------------------------------- column specs


@dataclass(frozen=True)
class NumericSpec:
    name: str
    center: float  # subtracted (median for robust scaling, mean for standard)
    scale: float  # divided by; 0.0 = constant in training: the input is always exactly 0
    fill: float  # the training median, used for missing values
    indicator: bool  # a 0/1 "was missing" input (training had gaps)
    role: str = "numeric"


@dataclass(frozen=True)
class BooleanSpec:
    name: str
    fill: float  # majority value in training (0.0 / 1.0)
    indicator: bool
    dtype: str  # "boolean" when the source column was bool-typed, else "string" (yes/no text)
    role: str = "boolean"


@dataclass(frozen=True)
class CategoricalSpec:
    name: str
    kind: str  # "text": values compared as their text; "number": numeric values, 3 == 3.0 == "3"
    vocabulary: tuple[str, ...]  # slot i + 2
    embedding_dim: int  # 0 = one-hot
    role: str = "categorical"

    @property
    def cardinality(self) -> int:
        return len(self.vocabulary) + 2  # + missing + unknown


ColumnSpec = NumericSpec | BooleanSpec | CategoricalSpec
_SPECS: dict[str, type] = {"numeric": NumericSpec, "boolean": BooleanSpec, "categorical": CategoricalSpec}


@dataclass(frozen=True)
class Transformed:
    x: np.ndarray  # [rows, n_dense + n_categorical] float32
    unknown_counts: dict[str, int]  # per categorical column: values that went to the unknown slot


def embedding_width(cardinality: int, onehot_max: int, max_dim: int) -> int:
    """0 (one-hot) up to ``onehot_max`` slots, else fast.ai's ``min(max_dim, round(1.6 * n**0.56))``."""
    if cardinality <= onehot_max:
        return 0
    return max(1, min(max_dim, round(1.6 * cardinality**0.56)))


# ----------------------------------------------------------------------------- value helpers

#: How a message names a row, from the row's index label in the frame: in training, the label
#: is the row's 0-based position in the file as read, and ``mlp_jax.data.row_namer`` words it
#: as the user knows the file (``data row 5 (line 6)`` in a CSV). Without one, a message says
#: ``row <position + row_offset>`` (0-based), as prediction names the rows of a request.
RowName = Callable[[Any], str]


def _row(values: pd.Series, i: int, row_offset: int = 0, row_name: RowName | None = None) -> str:
    """How a message names position ``i`` of ``values``."""
    return row_name(values.index[i]) if row_name is not None else f"row {i + row_offset}"


def _shown(value: Any) -> str:
    """A value in a message as the user wrote it: ``-inf``, ``3.5``, ``'lots'`` (not ``np.float64(-inf)``)."""
    return repr(value.item() if isinstance(value, np.generic) else value)


def _std(x: np.ndarray) -> float:
    """``x.std()``, or, where that overflows (values past ~1e154), the same computed on ``x / max|x|``."""
    with np.errstate(over="ignore", invalid="ignore"):
        std = float(x.std())
    if math.isfinite(std):
        return std
    peak = float(np.abs(x).max())
    return peak * float((x / peak).std())


#: Share of a text column's non-missing cells that must read as numbers for it to count as a
#: numeric column spoiled by a few text cells (placeholders such as "?" or "-").
NUMERIC_TEXT_SHARE = 0.9


def _numeric_text(values: pd.Series, null: np.ndarray, row_name: RowName | None = None) -> str | None:
    """Why a text column looks like numbers gone wrong, or None.

    Two cases: nearly every cell (:data:`NUMERIC_TEXT_SHARE`) is a number and the rest are
    text placeholders, or the cells are numbers written with thousands separators ("1,234.5").
    Parses each distinct value once (a fitted column may have millions of rows, few values).
    """
    present = values[~null]
    counts = present.value_counts()
    if not len(counts):
        return None
    text = pd.Series(counts.index.astype(str), index=counts.index).str.strip()
    parsed = pd.to_numeric(text, errors="coerce").notna().to_numpy()
    if parsed.all():
        return None
    cells = counts.to_numpy()
    if cells[parsed].sum() >= NUMERIC_TEXT_SHARE * cells.sum():
        bad = ~null & values.isin(counts.index[~parsed]).to_numpy()
        first = np.flatnonzero(bad)[:3]
        shown = ", ".join(f"{str(values.iloc[i]).strip()!r} in {_row(values, i, 0, row_name)}" for i in first)
        return (
            f"holds numbers except {int(bad.sum())} cell(s) of text: {shown}; if those mean 'missing', make "
            "the cells empty (empty cells are missing values), or list the column in data.categorical "
            "to treat every value as a category"
        )
    grouped = text.str.fullmatch(r"[-+]?\d{1,3}(,\d{3})+(\.\d*)?").to_numpy()
    unseparated = pd.to_numeric(text.str.replace(",", "", regex=False), errors="coerce").notna().to_numpy()
    if grouped.any() and cells[unseparated].sum() >= NUMERIC_TEXT_SHARE * cells.sum():
        i = _first(~null & values.isin(counts.index[grouped]).to_numpy())
        return (
            f"holds numbers written with thousands separators (e.g. {str(values.iloc[i]).strip()!r} in "
            f"{_row(values, i, 0, row_name)}): write them without separators (1234.5)"
        )
    return None


def shown_name(name: str) -> str:
    """A column name in a message: as is, or quoted when spaces around it would otherwise be invisible."""
    return repr(name) if name != name.strip() or not name else name


def _null_mask(values: pd.Series) -> np.ndarray:
    """True where a value is missing: None/NaN/NA, or a CSV null token in text."""
    mask = values.isna().to_numpy()
    if not (pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values)):
        mask = mask | values.isin(NULL_TOKENS).to_numpy()
    return mask


def _first(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _numbers(values: pd.Series, name: str, row_offset: int = 0, row_name: RowName | None = None) -> np.ndarray:
    """float64 with NaN for missing; refuses text that is not a number and non-finite values."""
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        out = values.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        null = _null_mask(values)
        parsed = pd.to_numeric(values.where(~null), errors="coerce")
        out = parsed.to_numpy(dtype=np.float64, na_value=np.nan)
        bad = np.isnan(out) & ~null
        if bad.any():
            i = _first(bad)
            raise FeatureError(
                f"column {name!r}, {_row(values, i, row_offset, row_name)}: expected a number, "
                f"got {_shown(values.iloc[i])}",
                name,
                i + row_offset,
            )
    inf = np.isinf(out)
    if inf.any():
        i = _first(inf)
        raise FeatureError(
            f"column {name!r}, {_row(values, i, row_offset, row_name)}: non-finite value {_shown(values.iloc[i])}",
            name,
            i + row_offset,
        )
    return out


def _booleans(values: pd.Series, name: str, row_offset: int = 0, row_name: RowName | None = None) -> np.ndarray:
    """0.0 / 1.0 with NaN for missing; refuses anything that is not a boolean token."""
    if pd.api.types.is_bool_dtype(values):
        return values.to_numpy(dtype=np.float64)
    null = _null_mask(values)
    if pd.api.types.is_numeric_dtype(values):
        out = values.to_numpy(dtype=np.float64, na_value=np.nan)
        bad = ~null & (out != 0) & (out != 1)
    else:
        tokens = values.astype(str).str.strip().str.lower().map(_BOOL_TOKENS)
        out = np.where(null, np.nan, tokens.to_numpy(dtype=np.float64, na_value=np.nan))
        bad = np.isnan(out) & ~null
    if bad.any():
        i = _first(bad)
        raise FeatureError(
            f"column {name!r}, {_row(values, i, row_offset, row_name)}: expected a boolean (true/false, yes/no, "
            f"1/0), got {_shown(values.iloc[i])}",
            name,
            i + row_offset,
        )
    return out


def _category_keys(values: pd.Series, kind: str) -> tuple[Any, np.ndarray]:
    """(pyarrow string array of keys, missing mask), vectorised.

    ``number`` columns key integer-valued numbers as ints, so 3 == 3.0 == "3".
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    if kind == "number":
        null = _null_mask(values)
        num = pd.to_numeric(values.where(~null), errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        ok = np.isfinite(num)
        intlike = ok & (np.floor(num) == num) & (np.abs(num) < 2**53)
        keys = values.astype(str).to_numpy(dtype=object)  # unparseable text keeps its text (-> unknown)
        if ok.any():
            keys[ok] = num[ok].astype(str)
        if intlike.any():
            keys[intlike] = num[intlike].astype(np.int64).astype(str)
        keys[null] = None  # a text column's gaps are NaN objects, not text
        return pa.array(keys, type=pa.string()), null
    if pd.api.types.is_bool_dtype(values):
        values = values.map({True: "True", False: "False"})
    try:  # str / object-of-str columns convert in C
        arr = pa.array(values, type=pa.string(), from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # mixed objects (numbers, bools): their text
        arr = pa.array(values.astype(str).where(values.notna()), type=pa.string(), from_pandas=True)
    null = pc.or_kleene(arr.is_null(), pc.is_in(arr, value_set=_null_tokens()))
    return arr, pc.fill_null(null, True).to_numpy(zero_copy_only=False)


@cache
def _null_tokens() -> Any:
    import pyarrow as pa

    return pa.array(NULL_TOKENS, type=pa.string())


def _nested_value(values: pd.Series) -> Any:
    """The first list, dict, set, tuple or array in an object column (pyarrow lists, structs, maps), or None."""
    if values.dtype != object or not pd.api.types.infer_dtype(values, skipna=True).startswith(("mixed", "unknown")):
        return None
    return next((v for v in values if isinstance(v, (list, tuple, dict, set, np.ndarray))), None)


def _is_text(values: pd.Series) -> bool:
    return not (pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values))


#: Text that reads as an integer code: a plain integer (at most 15 digits, no leading zero) or one
#: written as ``N.0``, which is how pandas writes an integer column that has a gap.
_INT_CODE = r"[+-]?(?:0|[1-9][0-9]{0,14})(?:\.0)?"


def _numeric_codes(values: pd.Series, null: np.ndarray) -> bool:
    """Whether a ``data.categorical`` column holds numbers (its categories are then keyed by value).

    True for a numeric column, and for text whose every value is an integer code (``"3"``,
    ``"-1"``, or ``"2.0"`` as pandas writes a column with a gap): 3, 3.0, ``"3"`` and ``"3.0"``
    are then one category, in training and at prediction. Text whose spelling carries meaning
    stays text: leading zeros (``"007"``), other decimals (versions ``"1.1"`` vs ``"1.10"``, ICD
    codes ``"250.0"`` vs ``"250.00"``), exponents, and numbers of more than 15 digits (account
    numbers, which float64 would merge); so do booleans.
    """
    if pd.api.types.is_bool_dtype(values):
        return False
    if not _is_text(values):
        return True
    present = values[~null]
    if present.map(type).ne(str).any():  # mixed objects (bools, numbers and text): keyed by their text
        return False
    return bool(present.str.strip().str.fullmatch(_INT_CODE).all())


def _python_bools(values: pd.Series) -> bool:
    """An object column (bools + missing) whose values are all Python/numpy bools."""
    if values.dtype != object:
        return False
    uniq = pd.unique(values.dropna())
    return len(uniq) > 0 and all(isinstance(u, (bool, np.bool_)) for u in uniq)


def _bool_like(values: pd.Series, null: np.ndarray) -> bool:
    """Exactly two distinct non-missing values that form a known true/false pair (any case)."""
    uniq = pd.unique(values[~null])
    if len(uniq) != 2:
        return False
    if all(isinstance(u, (bool, np.bool_)) for u in uniq):
        return True
    tokens = {str(u).strip().lower() for u in uniq}
    return any(tokens == set(pair) for pair in _BOOL_PAIRS)


def _lookup(keys: Any, vocabulary: Any) -> np.ndarray:
    """Position of each key (pyarrow strings) in ``vocabulary`` (pyarrow strings), -1 where absent."""
    import pyarrow.compute as pc

    return pc.fill_null(pc.index_in(keys, value_set=vocabulary), -1).to_numpy(zero_copy_only=False)


# ----------------------------------------------------------------------------- preprocessor


@dataclass(frozen=True)
class Preprocessor:
    """Fitted column preprocessing (see the module docstring); build with :meth:`fit`."""

    columns: tuple[ColumnSpec, ...]
    scaling: str = "robust"
    clip: float = 5.0
    missing: str = "impute"
    notes: tuple[str, ...] = field(default=(), compare=False)  # what fit decided, for describe_roles

    # ------------------------------------------------------------------------- fit

    @classmethod
    def fit(cls, frame: pd.DataFrame, cfg: DataConfig, row_name: RowName | None = None) -> Preprocessor:
        """Infers roles and fits every statistic on ``frame`` (the training split).

        Target columns (``cfg.target_names``) and ``cfg.drop`` are left out. ``row_name``: how
        errors name a row (:data:`RowName`).

        Raises:
          FeatureError: an unknown name in ``data.drop``/``data.categorical``, a column with
            no values, an identifier-like text column, non-finite numbers, nested values (lists,
            dicts), missing values under ``data.missing=error``, or no feature columns at all.
        """
        names = [str(c) for c in frame.columns]
        for key, listed in (("data.drop", cfg.drop), ("data.categorical", cfg.categorical)):
            unknown = [c for c in listed if c not in names]
            if unknown:
                raise FeatureError(
                    f"{key} names column(s) not in the table: {', '.join(map(repr, unknown))}; "
                    f"columns are: {', '.join(shown_name(n) for n in names)}"
                )
        skip = set(cfg.target_names) | set(cfg.drop)
        inputs = [c for c in names if c not in skip]
        if not inputs:
            raise FeatureError("no feature columns left besides the target(s) and data.drop")
        specs: list[ColumnSpec] = []
        notes: list[str] = []
        missing_counts: dict[str, int] = {}
        for name in inputs:
            values = frame[name]
            nested = _nested_value(values)
            if nested is not None:
                raise FeatureError(
                    f"column {name!r} holds nested values (e.g. {type(nested).__name__} {str(nested)[:40]}), which "
                    f"are not supported; leave it out with data.drop={name}",
                    name,
                )
            null = _null_mask(values)
            n_missing = int(null.sum())
            if n_missing == len(values):
                raise FeatureError(
                    f"column {name!r} has no values (all {len(values)} missing); drop it with data.drop={name}", name
                )
            if name in cfg.categorical:
                kind = "number" if _numeric_codes(values, null) else "text"
                if kind == "number" and _is_text(values):
                    notes.append(f"{name}: integer codes, keyed by value (3, 3.0 and '3' are one category)")
                specs.append(cls._fit_categorical(name, values, kind, cfg))
            elif pd.api.types.is_bool_dtype(values) or _bool_like(values, null):
                missing_counts[name] = n_missing
                specs.append(cls._fit_boolean(name, values, n_missing, row_name))
            elif _is_text(values):
                n_unique = int(values[~null].nunique())
                numeric_text = _numeric_text(values, null, row_name)
                if n_unique > MIN_ID_UNIQUE and n_unique >= ID_UNIQUE_RATIO * (len(values) - n_missing):
                    if numeric_text:  # a number column spoiled by a few text cells, not an identifier
                        raise FeatureError(f"column {name!r} {numeric_text}", name)
                    raise FeatureError(
                        f"column {name!r} looks like an identifier or free text ({n_unique} distinct values in "
                        f"{len(values) - n_missing} rows): drop it with data.drop={name}",
                        name,
                    )
                if numeric_text:
                    notes.append(f"{name}: treated as categories, but it {numeric_text}")
                specs.append(cls._fit_categorical(name, values, "text", cfg))
            else:
                missing_counts[name] = n_missing
                spec = cls._fit_numeric(name, values, n_missing, cfg, row_name)
                if spec.scale == 0.0:
                    notes.append(f"{name}: constant in training ({spec.center:g}); its input is always 0")
                specs.append(spec)
        gaps = {c: n for c, n in missing_counts.items() if n}
        if gaps and cfg.missing == "error":
            where = ", ".join(f"{c} ({n} rows)" for c, n in gaps.items())
            raise FeatureError(f"missing values in feature column(s): {where} (data.missing=impute fills them)")
        return cls(tuple(specs), cfg.scaling, cfg.clip, cfg.missing, tuple(notes))

    @staticmethod
    def _fit_numeric(
        name: str, values: pd.Series, n_missing: int, cfg: DataConfig, row_name: RowName | None = None
    ) -> NumericSpec:
        x = _numbers(values, name, 0, row_name)
        x = x[~np.isnan(x)]
        median = float(np.median(x))
        std = _std(x)
        if np.ptp(x) == 0:
            center, scale = median, 0.0
        elif cfg.scaling == "robust":
            q1, q3 = np.quantile(x, [0.25, 0.75])
            center, scale = median, float(q3 - q1) / _IQR_TO_STD
            if scale <= 1e-12 * max(1.0, abs(median)):
                scale = std
        else:
            center, scale = float(x.mean()), std
        return NumericSpec(name, center, scale, median, n_missing > 0)

    @staticmethod
    def _fit_boolean(name: str, values: pd.Series, n_missing: int, row_name: RowName | None = None) -> BooleanSpec:
        b = _booleans(values, name, 0, row_name)
        b = b[~np.isnan(b)]
        fill = 1.0 if b.mean() > 0.5 else 0.0
        dtype = "boolean" if pd.api.types.is_bool_dtype(values) or _python_bools(values.dropna()) else "string"
        return BooleanSpec(name, fill, n_missing > 0, dtype)

    @staticmethod
    def _fit_categorical(name: str, values: pd.Series, kind: str, cfg: DataConfig) -> CategoricalSpec:
        import pyarrow.compute as pc

        keys, null = _category_keys(values, kind)
        counts = pc.value_counts(keys.filter(~null)).to_pylist()
        vocab = tuple(sorted(c["values"] for c in counts if c["counts"] >= cfg.min_category_count))
        card = len(vocab) + 2
        return CategoricalSpec(
            name, kind, vocab, embedding_width(card, cfg.onehot_max_cardinality, cfg.embedding_max_dim)
        )

    # ------------------------------------------------------------------------- layout

    @property
    def input_columns(self) -> tuple[str, ...]:
        """Raw columns a request must send, in order."""
        return tuple(s.name for s in self.columns)

    @cached_property
    def _numeric(self) -> tuple[NumericSpec, ...]:
        return tuple(s for s in self.columns if isinstance(s, NumericSpec))

    @cached_property
    def _boolean(self) -> tuple[BooleanSpec, ...]:
        return tuple(s for s in self.columns if isinstance(s, BooleanSpec))

    @cached_property
    def _categorical(self) -> tuple[CategoricalSpec, ...]:
        return tuple(s for s in self.columns if isinstance(s, CategoricalSpec))

    @cached_property
    def _vocabularies(self) -> dict[str, Any]:
        import pyarrow as pa

        return {s.name: pa.array(list(s.vocabulary), type=pa.string()) for s in self._categorical}

    @property
    def dense_names(self) -> tuple[str, ...]:
        """Names of the dense inputs, in matrix order."""
        names = [s.name for s in self._numeric]
        names += [f"{s.name}__missing" for s in self._numeric if s.indicator]
        for s in self._boolean:
            names += [s.name] + ([f"{s.name}__missing"] if s.indicator else [])
        return tuple(names)

    @property
    def n_dense(self) -> int:
        return len(self.dense_names)

    @property
    def categorical_columns(self) -> tuple[str, ...]:
        return tuple(s.name for s in self._categorical)

    @property
    def cardinalities(self) -> tuple[int, ...]:
        """Slots per categorical column (vocabulary + missing + unknown), in matrix order."""
        return tuple(s.cardinality for s in self._categorical)

    @property
    def embedding_dims(self) -> tuple[int, ...]:
        """Embedding width per categorical column; 0 = one-hot."""
        return tuple(s.embedding_dim for s in self._categorical)

    @property
    def n_inputs(self) -> int:
        return self.n_dense + len(self._categorical)

    @property
    def roles(self) -> tuple[dict[str, Any], ...]:
        """Per input column: name, role, signature dtype (double/string/boolean), nullable."""
        out = []
        for s in self.columns:
            if isinstance(s, NumericSpec):
                dtype, nullable = "double", self.missing == "impute"
            elif isinstance(s, BooleanSpec):
                dtype, nullable = s.dtype, self.missing == "impute"
            else:
                dtype, nullable = "string", True
            out.append({"name": s.name, "role": s.role, "dtype": dtype, "nullable": nullable})
        return tuple(out)

    def describe_roles(self) -> list[str]:
        """Lines for the start of a run: one per input column, then what fit decided."""
        width = max(len(s.name) for s in self.columns)
        lines = [
            f"features: {len(self.columns)} input column(s) -> {self.n_dense} dense + {len(self._categorical)} "
            f"categorical input(s) ({self.scaling} scaling, clip {self.clip:g}, missing={self.missing})"
        ]
        for s in self.columns:
            if isinstance(s, NumericSpec):
                what = f"numeric   center {s.center:.4g} scale {s.scale:.4g}"
                what += f", missing -> {s.fill:.4g} + indicator" if s.indicator else ""
            elif isinstance(s, BooleanSpec):
                what = f"boolean   ({s.dtype}), missing -> {int(s.fill)}" + (" + indicator" if s.indicator else "")
            else:
                enc = "one-hot" if s.embedding_dim == 0 else f"embedding {s.embedding_dim}"
                what = f"categorical {s.cardinality} slots ({len(s.vocabulary)} values + missing + unknown), {enc}"
            lines.append(f"  {s.name:<{width}}  {what}")
        lines += [f"  note: {n}" for n in self.notes]
        return lines

    # ------------------------------------------------------------------------- transform

    def transform(
        self,
        frame: pd.DataFrame | Mapping[str, Sequence[Any]],
        row_offset: int = 0,
        row_name: RowName | None = None,
    ) -> Transformed:
        """Raw rows -> ``Transformed``. Extra columns are ignored.

        ``row_offset`` is added to the row numbers in error messages (for chunked reading);
        ``row_name``, when given, words them instead, from each row's index label (:data:`RowName`).

        Raises:
          FeatureError: a missing column (named), a value that is not a number in a numeric
            column or not a boolean in a boolean column, a non-finite number, or a missing
            value under ``data.missing=error`` (named with its 0-based row).
        """
        if not isinstance(frame, pd.DataFrame):
            frame = pd.DataFrame(frame)
        absent = [c for c in self.input_columns if c not in frame.columns]
        if absent:
            raise FeatureError(f"missing column(s): {', '.join(map(repr, absent))}", absent[0])
        n = len(frame)
        x = np.empty((n, self.n_inputs), np.float32)
        j = 0
        nums = []
        for s in self._numeric:
            v = _numbers(frame[s.name], s.name, row_offset, row_name)
            nums.append(v)
            miss = np.isnan(v)
            self._check_missing(s.name, miss, row_offset, row_name, frame[s.name])
            v = np.where(miss, s.fill, v)
            z = (v - s.center) / s.scale if s.scale > 0 else np.zeros_like(v)
            if self.clip > 0:
                z = np.clip(z, -self.clip, self.clip)
            x[:, j] = z
            j += 1
        for s, v in zip(self._numeric, nums, strict=True):
            if s.indicator:
                x[:, j] = np.isnan(v)
                j += 1
        for s in self._boolean:
            b = _booleans(frame[s.name], s.name, row_offset, row_name)
            miss = np.isnan(b)
            self._check_missing(s.name, miss, row_offset, row_name, frame[s.name])
            x[:, j] = np.where(miss, s.fill, b)
            j += 1
            if s.indicator:
                x[:, j] = miss
                j += 1
        unknown: dict[str, int] = {}
        for s in self._categorical:
            keys, null = _category_keys(frame[s.name], s.kind)
            codes = _lookup(keys, self._vocabularies[s.name]) + 2  # -1 (not in vocabulary) -> 1 = unknown
            codes[null] = MISSING_SLOT
            unknown[s.name] = int((codes == UNKNOWN_SLOT).sum())
            x[:, j] = codes
            j += 1
        return Transformed(x, unknown)

    def record_encoder(self) -> Callable[[Mapping[str, Any]], tuple[np.ndarray, dict[str, int]] | None]:
        """A function from one plain JSON record to ``transform``'s row, without pandas or numpy per column.

        ``encode(record)`` gives ``(x [1, n_inputs] float32, unknown counts per categorical
        column)`` with the same bits as :meth:`transform` (the same float64 arithmetic, one
        rounding to float32), or None when the record is not the plain case (a key missing or
        extra, a value that is not None/int/float in a numeric column, not None/bool in a
        boolean one, not None/str in a text categorical, a non-finite number, a gap under
        ``missing=error``, a numeric-kind categorical): the caller then takes the general
        path, which also words every error. ~10 us for a penguins-sized record instead of
        ~100 us (per-column numpy) or ~0.5 ms (a pandas frame).
        """
        nulls = frozenset(NULL_TOKENS)
        clip = float(self.clip)
        error_on_missing = self.missing == "error"
        numeric = [(s.name, s.center, s.scale, s.fill, s.indicator) for s in self._numeric]
        boolean = [(s.name, s.fill, s.indicator) for s in self._boolean]
        categorical = [(s.name, {v: k + 2 for k, v in enumerate(s.vocabulary)}) for s in self._categorical]
        plain = all(s.kind == "text" for s in self._categorical)
        names = frozenset(self.input_columns)
        width = len(names)
        n_inputs = self.n_inputs
        isfinite = math.isfinite

        def encode(record: Mapping[str, Any]) -> tuple[np.ndarray, dict[str, int]] | None:
            if not plain or len(record) != width or not names.issuperset(record):
                return None
            row: list[float] = []
            gaps: list[float] = []
            for name, center, scale, fill, indicator in numeric:
                a = record[name]
                if a is None:
                    if error_on_missing:
                        return None
                    v = fill
                    miss = 1.0
                elif type(a) is float or (type(a) is int and -(2**1023) < a < 2**1023):
                    v = float(a)
                    if not isfinite(v):
                        return None
                    miss = 0.0
                else:
                    return None
                z = (v - center) / scale if scale > 0 else 0.0
                if clip > 0:
                    z = min(max(z, -clip), clip)
                row.append(z)
                if indicator:
                    gaps.append(miss)
            row += gaps
            for name, fill, indicator in boolean:
                a = record[name]
                if a is None:
                    if error_on_missing:
                        return None
                    row.append(fill)
                elif type(a) is bool:
                    row.append(1.0 if a else 0.0)
                else:
                    return None
                if indicator:
                    row.append(1.0 if a is None else 0.0)
            unknown: dict[str, int] = {}
            for name, slots in categorical:
                a = record[name]
                if a is None:
                    code = MISSING_SLOT
                elif type(a) is str:
                    code = MISSING_SLOT if a in nulls else slots.get(a, UNKNOWN_SLOT)
                else:
                    return None
                unknown[name] = int(code == UNKNOWN_SLOT)
                row.append(code)
            x = np.array([row], np.float32)
            return (x, unknown) if x.shape[1] == n_inputs else None

        return encode

    def _check_missing(
        self,
        name: str,
        miss: np.ndarray,
        row_offset: int,
        row_name: RowName | None = None,
        values: pd.Series | None = None,
    ) -> None:
        """Refuses a gap under ``missing=error``; ``values`` (the column) gives ``row_name`` its index labels."""
        if self.missing == "error" and miss.any():
            i = _first(miss)
            where = _row(values, i, row_offset, row_name) if values is not None else f"row {i + row_offset}"
            raise FeatureError(f"column {name!r}, {where}: missing value (data.missing=error)", name, i + row_offset)

    # ------------------------------------------------------------------------- JSON

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON: ``{"format", "kind", "scaling", "clip", "missing", "columns": [...]}``."""
        cols = []
        for s in self.columns:
            d = dataclasses.asdict(s)
            if isinstance(s, CategoricalSpec):
                d["vocabulary"] = list(s.vocabulary)
                d["cardinality"] = s.cardinality  # informative; recomputed on load
            cols.append({"role": d.pop("role"), **d})
        return {
            "format": FORMAT,
            "kind": KIND,
            "scaling": self.scaling,
            "clip": self.clip,
            "missing": self.missing,
            "columns": cols,
            "notes": list(self.notes),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Preprocessor:
        if d.get("kind") != KIND or d.get("format") != FORMAT:
            raise FeatureError(
                f"not a preprocessing format this version reads (kind {d.get('kind')!r}, format {d.get('format')!r}; "
                f"expected {KIND!r} format {FORMAT})"
            )
        specs: list[ColumnSpec] = []
        for c in d["columns"]:
            c = dict(c)
            role = c.pop("role")
            c.pop("cardinality", None)
            if role == "categorical":
                c["vocabulary"] = tuple(c["vocabulary"])
            spec = _SPECS[role](**c)
            if isinstance(spec, NumericSpec) and not (
                all(math.isfinite(v) for v in (spec.center, spec.scale, spec.fill)) and spec.scale >= 0
            ):
                raise FeatureError(
                    f"column {spec.name!r}: center {spec.center}, scale {spec.scale}, fill {spec.fill} "
                    "must be finite numbers (scale >= 0)"
                )
            specs.append(spec)
        return cls(tuple(specs), d["scaling"], float(d["clip"]), d["missing"], tuple(d.get("notes", ())))


# ----------------------------------------------------------------------------- targets


def _typed_labels(values: pd.Series, name: str) -> np.ndarray:
    """Labels typed so they round-trip exactly: bool, int, or str ("007" stays text).

    Raises FeatureError for non-integer numbers (a classification target must be classes).
    """
    hint = f"target column {name!r} holds non-integer numbers; for a numeric target use data.task=regression"
    if pd.api.types.is_bool_dtype(values):
        return values.to_numpy(dtype=bool)
    if pd.api.types.is_numeric_dtype(values):
        x = values.to_numpy(dtype=np.float64)
        if not np.all(np.floor(x) == x):
            raise FeatureError(hint, name)
        return x.astype(np.int64)
    if _python_bools(values):
        return values.to_numpy(dtype=bool)
    text = values.astype(str)
    low = text.str.lower()
    if low.isin(["true", "false"]).all():
        return (low == "true").to_numpy()
    if text.str.fullmatch(r"[+-]?(0|[1-9][0-9]*)").all():
        return text.astype(np.int64).to_numpy()
    num = pd.to_numeric(text, errors="coerce")
    if num.notna().all() and not text.str.fullmatch(r"[+-]?0[0-9]+").any():
        x = num.to_numpy(dtype=np.float64)
        if np.all(np.isfinite(x)) and np.all(np.floor(x) == x):
            return x.astype(np.int64)
        raise FeatureError(hint, name)
    return text.to_numpy(dtype=object)


def _python(v: Any) -> Any:
    return v.item() if hasattr(v, "item") else str(v) if isinstance(v, str) else v


@dataclass(frozen=True)
class TargetSpec:
    """What y means: class labels in index order, or per-target mean/scale for regression."""

    task: str
    names: tuple[str, ...]
    classes: tuple[Any, ...] = ()  # classification: JSON-able Python values, index i = class i
    mean: tuple[float, ...] = ()  # regression: y_scaled = (y - mean) / scale
    scale: tuple[float, ...] = ()

    @classmethod
    def fit(cls, frame: pd.DataFrame, task: str, names: Iterable[str], row_name: RowName | None = None) -> TargetSpec:
        """Classes from every row given (so none is missing from a split); statistics from ``frame``.

        Raises FeatureError for a non-integer float classification target, fewer than two classes,
        or a regression target that is not numeric, not finite, constant in ``frame``, or larger
        in magnitude than :data:`MAX_TARGET_MAGNITUDE`.
        """
        names = tuple(names)
        if task == "classification":
            (name,) = names
            labels = _typed_labels(frame[name], name)
            classes = tuple(_python(c) for c in np.unique(labels))
            if len(classes) < 2:
                raise FeatureError(
                    f"target column {name!r} has {len(classes)} class(es); a classifier needs at least 2", name
                )
            return cls(task, names, classes=classes)
        y = cls._numeric_targets(frame, names, row_name)
        for j, name in enumerate(names):
            peak = float(np.abs(y[:, j]).max()) if len(y) else 0.0
            if peak > MAX_TARGET_MAGNITUDE:
                raise FeatureError(
                    f"regression target column {name!r} has values up to {peak:.3g} in magnitude; beyond "
                    f"{MAX_TARGET_MAGNITUDE:.0e} its squared errors (MSE, RMSE, R²) overflow float64: rescale the "
                    "column (e.g. divide it by a power of ten) and train on that",
                    name,
                )
            if len(y) and np.ptp(y[:, j]) == 0:
                raise FeatureError(
                    f"regression target column {name!r} is constant in the training rows (every value is "
                    f"{y[0, j]:g}): there is nothing to learn",
                    name,
                )
        mean, std = y.mean(axis=0), y.std(axis=0)
        return cls(task, names, mean=tuple(map(float, mean)), scale=tuple(map(float, std)))

    @staticmethod
    def _numeric_targets(frame: pd.DataFrame, names: tuple[str, ...], row_name: RowName | None = None) -> np.ndarray:
        cols = []
        for name in names:
            v = frame[name]
            if pd.api.types.is_bool_dtype(v) or not pd.api.types.is_numeric_dtype(v):
                raise FeatureError(
                    f"regression target column {name!r} is not numeric (dtype {v.dtype}); "
                    "for labels use data.task=classification",
                    name,
                )
            x = v.to_numpy(dtype=np.float64)
            if not np.isfinite(x).all():
                i = _first(~np.isfinite(x))
                raise FeatureError(
                    f"regression target column {name!r} has non-finite values (first: {_shown(v.iloc[i])}, "
                    f"{_row(v, i, 0, row_name)})",
                    name,
                    i,
                )
            cols.append(x)
        return np.stack(cols, axis=1)

    def encode(self, frame: pd.DataFrame, row_name: RowName | None = None) -> np.ndarray:
        """int32 class indices ``[rows]``, or float32 scaled targets ``[rows, n_targets]``."""
        if self.task == "classification":
            (name,) = self.names
            labels = _typed_labels(frame[name], name)
            idx = pd.Index(list(self.classes), dtype=object).get_indexer(pd.Series(labels, dtype=object))
            if (idx < 0).any():
                raise FeatureError(f"target column {name!r}: label {labels[idx < 0][0]!r} is not a known class", name)
            return idx.astype(np.int32)
        y = self._numeric_targets(frame, self.names, row_name)
        return ((y - np.asarray(self.mean)) / np.asarray(self.scale)).astype(np.float32)

    def decode(self, y_scaled: np.ndarray) -> np.ndarray:
        """Regression outputs back to original units (float64)."""
        return np.asarray(y_scaled, np.float64) * np.asarray(self.scale) + np.asarray(self.mean)

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "names": list(self.names),
            "classes": list(self.classes),
            "mean": list(self.mean),
            "scale": list(self.scale),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TargetSpec:
        return cls(d["task"], tuple(d["names"]), tuple(d["classes"]), tuple(d["mean"]), tuple(d["scale"]))


__all__ = [
    "NULL_TOKENS",
    "BooleanSpec",
    "CategoricalSpec",
    "FeatureError",
    "NumericSpec",
    "Preprocessor",
    "RowName",
    "TargetSpec",
    "Transformed",
    "embedding_width",
    "shown_name",
]
