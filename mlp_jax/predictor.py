"""One object that turns a checkpoint (or an MLflow model URI) into predictions.

Every prediction path (HTTP service, batch CLI, MLflow pyfunc) goes through
:class:`Predictor`, so the same model gives the same numbers everywhere.

Two stages:

1. **encode** (host, numpy/pandas): raw rows (a DataFrame, named records, or positional
   numeric rows) -> the float32 model matrix, with the artifact's fitted
   :class:`mlp_jax.features.Preprocessor` (imputation, robust scaling, category codes),
   exactly as in training. Format-1 artifacts (all-numeric, a standardiser) get the
   equivalent ``(x - mean) / scale`` in float32. Errors name the column and the row.
2. **run** (device): the network (+ softmax for a classifier) compiled ahead of time for a
   fixed set of batch-size buckets over the model matrix; regression outputs are put back
   in the targets' original units on the host (``out * scale + mean``, float64).

The forward pass is compiled for a fixed set of batch-size buckets; a request is padded up to the next bucket and sliced back, so no
request shape ever triggers a compilation. Batches larger than the biggest bucket are
cut into bucket-sized chunks.

Inside every bucket the rows go through the network in fixed tiles of :data:`ROW_TILE`
rows (``lax.map`` over tiles). XLA picks its matmul kernel and blocking from the batch
size, so a 1-row and a 4096-row matmul round differently in the last bit; with one tile
shape for every bucket, a row's probabilities are bitwise the same whatever else was in
its request, so the service, the batch command and the pyfunc agree exactly.

An **ensemble** artifact (``meta.members`` = K > 1: parameters stacked along a member axis)
runs all K members inside the same compiled bucket programs (``vmap`` over the stack within
each tile) and answers the mean of their probabilities (classification) or predictions
(regression) plus their standard deviation per class or target (the spread: how much the
members disagree; for regression in the targets' units). :meth:`Predictor.run_encoded` then
returns ``[n, 2C]`` (or ``[n, 2T]``): the means followed by the standard deviations
(:meth:`Predictor.split` separates them). A single model's outputs are unchanged.
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mlp_jax import artifact, model_uri
from mlp_jax import model as model_lib
from mlp_jax.artifact import LoadedArtifact
from mlp_jax.features import FeatureError, NumericSpec, Preprocessor

#: Rows per matmul inside every compiled program (see the module docstring).
ROW_TILE = 32
#: Batch sizes compiled at construction (multiples of ROW_TILE; others are rounded up to one).
DEFAULT_BUCKETS = (32, 256, 1024, 4096)
#: Compilation events JAX reports through ``jax.monitoring`` (used to prove none happen per request).
COMPILE_EVENTS = ("/jax/core/compile/backend_compile_duration",)
#: Named records up to this many rows are encoded without pandas (same bits; see ``_fast_records``).
FAST_RECORDS = 256


class PredictorError(ValueError):
    """Input rows cannot be scored; the message names the column and the row (0-based) when it can.

    ``column`` and ``row`` carry them for callers that reword the message (the batch CLI).
    """

    def __init__(self, message: str, column: str | None = None, row: int | None = None):
        super().__init__(message)
        self.column = column
        self.row = row


class Predictor:
    """Raw rows in, model outputs out (see the module docstring); one instance per loaded model.

    Attributes:
      meta: the artifact's :class:`~mlp_jax.artifact.ArtifactMeta`.
      task: ``"classification"`` or ``"regression"``.
      feature_names: the raw input columns, in order (= ``meta.input_columns``).
      classes: class labels in output order (classification; ``()`` for regression).
      targets: regression target names in output order (``()`` for classification).
      n_features: how many raw input columns a row has.
      n_inputs: the model matrix's width (what :meth:`encode` returns and :meth:`run_encoded` takes).
      members: 1 for a single model, K for an ensemble of K members.
      name, version, step, source, buckets: where the model came from and how it is compiled.
    """

    def __init__(
        self,
        ckpt: LoadedArtifact,
        buckets: Sequence[int] = DEFAULT_BUCKETS,
        source: str | None = None,
        name: str | None = None,
        version: str | None = None,
    ):
        meta = ckpt.meta
        self.checkpoint = ckpt
        self.source = source or str(ckpt.path)
        self.meta = meta
        #: Registered model name and version for registry URIs; experiment name and ``step-N`` otherwise.
        self.name: str = name or meta.name or ckpt.path.parent.name
        self.version: str = version or f"step-{ckpt.step}"
        self.task: str = meta.task
        self.feature_names: tuple[str, ...] = tuple(meta.input_columns)
        self.classes: tuple[Any, ...] = tuple(meta.classes) if self.task == "classification" else ()
        self.targets: tuple[str, ...] = tuple(meta.targets) if self.task == "regression" else ()
        self.n_features = len(self.feature_names)
        self.metrics: dict[str, Any] = meta.metrics
        self.members: int = meta.members
        if not buckets or min(int(b) for b in buckets) < 1:
            raise ValueError(f"buckets must be positive batch sizes, got {buckets}")
        self.buckets = tuple(sorted({-(-int(b) // ROW_TILE) * ROW_TILE for b in buckets}))

        # ---- host-side encoding
        self.preprocessor: Preprocessor | None = None
        if meta.preprocessing.get("kind") == "standardize":  # format 1: all numeric, standardised in float32
            self._mean = np.asarray(meta.preprocessing["mean"], np.float32)
            self._scale = np.asarray(meta.preprocessing["scale"], np.float32)
            self.n_inputs = self.n_features
            self._roles = tuple(
                {"name": n, "role": "numeric", "dtype": "double", "nullable": False} for n in self.feature_names
            )
            self.positional = True
        else:
            try:
                self.preprocessor = Preprocessor.from_dict(meta.preprocessing)
            except (FeatureError, KeyError, TypeError) as e:
                raise artifact.CheckpointError(f"{ckpt.path}: unreadable preprocessing: {e}") from None
            pre = self.preprocessor
            self.n_inputs = pre.n_inputs
            self._roles = tuple(pre.roles)
            self._slots = {
                s.name: {v: k + 2 for k, v in enumerate(s.vocabulary)} for s in pre.columns if s.role == "categorical"
            }
            # Positional rows are unambiguous only when every input is a number.
            self.positional = all(isinstance(s, NumericSpec) for s in pre.columns)
            if self.positional:
                specs = [s for s in pre.columns if isinstance(s, NumericSpec)]
                self._fill = np.asarray([s.fill for s in specs], np.float64)
                self._center = np.asarray([s.center for s in specs], np.float64)
                self._div = np.asarray([s.scale if s.scale > 0 else 1.0 for s in specs], np.float64)
                self._const = np.asarray([s.scale <= 0 for s in specs])
                self._indicators = np.asarray([i for i, s in enumerate(specs) if s.indicator], np.int64)
        if (
            tuple(self.preprocessor.input_columns if self.preprocessor is not None else self.feature_names)
            != self.feature_names
        ):
            raise artifact.CheckpointError(f"{ckpt.path}: preprocessing columns differ from the input columns")
        if self.n_inputs != meta.network.in_features:
            raise artifact.CheckpointError(
                f"{ckpt.path}: preprocessing gives {self.n_inputs} inputs, the network takes {meta.network.in_features}"
            )
        if self.task == "regression":
            stats = meta.target_stats
            self._y_mean = np.asarray(stats["mean"], np.float64)
            self._y_scale = np.asarray(stats["scale"], np.float64)

        # ---- the compiled network
        device = jax.local_devices()[0]
        graphdef = ckpt.graphdef
        classify = self.task == "classification"
        members = self.members
        # The arguments travel as a flat list of arrays: flattening the NNX state pytree on
        # every call costs ~10 us, a third of a one-row request's model time.
        leaves, treedef = jax.tree.flatten(jax.device_put(ckpt.params, device))

        def forward(leaves: list[jax.Array], x: jax.Array) -> jax.Array:
            params = jax.tree.unflatten(treedef, leaves)

            def tile(xt: jax.Array) -> jax.Array:
                if members > 1:  # every member on the same tile: [K, tile, C] -> mean and std per class / target
                    outs = jax.vmap(lambda p: model_lib.apply(graphdef, p, xt))(params)
                    outs = jax.nn.softmax(outs, axis=-1) if classify else outs
                    return jnp.concatenate([jnp.mean(outs, axis=0), jnp.std(outs, axis=0)], axis=-1)
                out = model_lib.apply(graphdef, params, xt)
                return jax.nn.softmax(out, axis=-1) if classify else out

            n, width = x.shape
            if n == ROW_TILE:
                return tile(x)
            return jax.lax.map(tile, x.reshape(n // ROW_TILE, ROW_TILE, width)).reshape(n, -1)

        self._args = (leaves,)
        jitted = jax.jit(forward)
        self._compiled = {
            b: jitted.lower(*self._args, jax.ShapeDtypeStruct((b, self.n_inputs), jnp.float32)).compile()
            for b in self.buckets
        }

    # -------------------------------------------------------------------- construction

    @classmethod
    def load(cls, model: str | Path, buckets: Sequence[int] = DEFAULT_BUCKETS) -> Predictor:
        """From a workdir, a step folder or an MLflow URI (``models:/NAME@alias``, ``runs:/ID/model``).

        An exported folder (``python -m mlp_jax.export``) is loaded by :func:`mlp_jax.export.load_predictor`,
        which the service, the batch command and the pyfunc call (it accepts both).

        Raises:
          mlp_jax.artifact.CheckpointError: the path is missing or not a checkpoint.
        """
        where = model_uri.resolve(model)  # CheckpointError names a bad store, name, alias or version
        if (where.path / "forward.stablehlo").is_file():
            raise artifact.CheckpointError(
                f"{where.path} is an exported model folder: load it with mlp_jax.export.load_predictor"
            )
        return cls(artifact.load(where.path), buckets, source=where.source, name=where.name, version=where.version)

    @property
    def step(self) -> int:
        return self.checkpoint.step

    @property
    def roles(self) -> tuple[dict[str, Any], ...]:
        """Per input column: ``{"name", "role", "dtype", "nullable"}`` (dtype: double/string/boolean)."""
        return self._roles

    @property
    def numeric_columns(self) -> tuple[str, ...]:
        """The input columns whose role is numeric, in input order."""
        return tuple(r["name"] for r in self._roles if r["role"] == "numeric")

    # -------------------------------------------------------------------- encode

    def encode(self, rows: Any, unknown_counts: dict[str, int] | None = None, row_offset: int = 0) -> np.ndarray:
        """Raw rows -> the float32 model matrix ``[n, n_inputs]``.

        ``rows``: a pandas DataFrame (columns by name, any order, extra columns ignored), a
        list of dicts (named records: every input column, no other key), or positional rows (a
        list of lists / 2-D array, only when every input column is numeric). Values may be
        numbers, text, None/NaN (missing: imputed as in training).

        ``unknown_counts``: when given, filled with the number of values per categorical column
        that went to the unknown slot (not seen in training). ``row_offset`` is added to the
        row numbers in errors (for chunked reading).

        Raises:
          PredictorError: names the column and the (0-based) row at fault.
        """
        x, counts = self.encode_counted(rows, row_offset)
        if unknown_counts is not None:
            unknown_counts.update(counts)
        return x

    def encode_counted(self, rows: Any, row_offset: int = 0) -> tuple[np.ndarray, dict[str, int]]:
        """``(encode(rows), unknown values per categorical column)``; see :meth:`encode`."""
        import pandas as pd

        if isinstance(rows, pd.DataFrame):
            return self._encode_frame(rows, row_offset)
        if isinstance(rows, Mapping):
            raise PredictorError("expected a list of rows (records or lists of values), got one mapping")
        if (
            isinstance(rows, Sequence)
            and not isinstance(rows, (str, bytes))
            and rows
            and all(isinstance(r, Mapping) for r in rows)
        ):
            self._check_records(rows, row_offset)
            fast = self._fast_records(rows) if len(rows) <= FAST_RECORDS else None
            if fast is not None:
                return fast
            import pandas as pd

            frame = pd.DataFrame({c: pd.Series([r[c] for r in rows], dtype=object) for c in self.feature_names})
            return self._encode_frame(frame, row_offset)
        if isinstance(rows, Sequence) and rows and any(isinstance(r, Mapping) for r in rows):
            i = next(i for i, r in enumerate(rows) if not isinstance(r, Mapping))
            raise PredictorError(
                f"row {i + row_offset}: expected a record (an object of column: value), got {rows[i]!r}",
                row=i + row_offset,
            )
        return self._encode_positional(rows, row_offset), {}

    def _check_records(self, rows: Sequence[Mapping[str, Any]], row_offset: int) -> None:
        wanted = self.feature_names
        known = set(wanted)
        for i, r in enumerate(rows):
            if len(r) != self.n_features or any(k not in known for k in r):
                missing = [c for c in wanted if c not in r]
                if missing:
                    raise PredictorError(
                        f"row {i + row_offset}: missing column(s) {', '.join(map(repr, missing))}",
                        missing[0],
                        i + row_offset,
                    )
                extra = [k for k in r if k not in known]
                raise PredictorError(
                    f"row {i + row_offset}: unknown column(s) {', '.join(map(repr, extra))} (the model takes: "
                    f"{', '.join(wanted)})",
                    str(extra[0]),
                    i + row_offset,
                )

    def _fast_records(self, rows: Sequence[Mapping[str, Any]]) -> tuple[np.ndarray, dict[str, int]] | None:
        """:meth:`Preprocessor.transform` for a few plain records without pandas (~100x faster for one row).

        Handles the common JSON types only (numbers and None in numeric columns, text and None
        in text categoricals, bools and None in boolean columns) with the same float64
        operations as ``transform``, so the bits are the same; anything else returns None and
        the caller takes the Preprocessor path (which also words every error).
        """
        pre = self.preprocessor
        if pre is None:
            return None
        from mlp_jax.features import NULL_TOKENS, BooleanSpec, CategoricalSpec

        nulls = frozenset(NULL_TOKENS)
        n = len(rows)
        x = np.empty((n, self.n_inputs), np.float32)
        dense: list[np.ndarray] = []
        indicators: list[np.ndarray] = []
        bools: list[np.ndarray] = []
        codes: list[np.ndarray] = []
        unknown: dict[str, int] = {}
        for s in pre.columns:
            vals = [r[s.name] for r in rows]
            if isinstance(s, NumericSpec):
                v = np.empty(n, np.float64)
                for i, a in enumerate(vals):
                    if a is None:
                        v[i] = np.nan
                    elif type(a) in (int, float):
                        v[i] = a
                    else:
                        return None
                if not np.isfinite(v[~np.isnan(v)]).all():
                    return None
                miss = np.isnan(v)
                if pre.missing == "error" and miss.any():
                    return None
                v = np.where(miss, s.fill, v)
                z = (v - s.center) / s.scale if s.scale > 0 else np.zeros_like(v)
                if pre.clip > 0:
                    z = np.clip(z, -pre.clip, pre.clip)
                dense.append(z)
                if s.indicator:
                    indicators.append(miss)
            elif isinstance(s, BooleanSpec):
                b = np.empty(n, np.float64)
                for i, a in enumerate(vals):
                    if a is None:
                        b[i] = np.nan
                    elif type(a) is bool:
                        b[i] = float(a)
                    else:
                        return None
                miss = np.isnan(b)
                if pre.missing == "error" and miss.any():
                    return None
                bools.append(np.where(miss, s.fill, b))
                if s.indicator:
                    bools.append(miss)
            elif isinstance(s, CategoricalSpec):
                if s.kind != "text":
                    return None
                slots = self._slots[s.name]
                c = np.empty(n, np.float32)
                for i, a in enumerate(vals):
                    if a is None or (type(a) is str and a in nulls):
                        c[i] = 0  # MISSING_SLOT
                    elif type(a) is str:
                        c[i] = slots.get(a, 1)  # UNKNOWN_SLOT
                    else:
                        return None
                unknown[s.name] = int((c == 1).sum())
                codes.append(c)
            else:
                return None
        j = 0
        for col in (*dense, *indicators, *bools, *codes):
            x[:, j] = col
            j += 1
        return x, unknown

    def _check_frame(self, frame: Any) -> None:
        """PredictorError when ``frame`` lacks a feature column or has no rows."""
        missing = [c for c in self.feature_names if c not in frame.columns]
        if missing:
            raise PredictorError(
                f"missing feature column(s): {', '.join(missing)} (the model takes: {', '.join(self.feature_names)})",
                missing[0],
            )
        if len(frame) == 0:
            raise PredictorError("expected at least one row, got 0")

    def _encode_frame(self, frame: Any, row_offset: int) -> tuple[np.ndarray, dict[str, int]]:
        self._check_frame(frame)
        if self.preprocessor is None:  # format 1: numbers only
            cols = []
            for c in self.feature_names:
                try:
                    cols.append(self._number_column(frame[c], c, row_offset))
                except FeatureError as e:
                    raise PredictorError(str(e), e.column, e.row) from None
            return self._encode_positional(np.stack(cols, axis=1), row_offset), {}
        try:
            t = self.preprocessor.transform(frame[list(self.feature_names)], row_offset=row_offset)
        except FeatureError as e:
            raise PredictorError(str(e), e.column, e.row) from None
        return t.x, t.unknown_counts

    @staticmethod
    def _number_column(values: Any, name: str, row_offset: int) -> np.ndarray:
        from mlp_jax.features import _numbers

        out = _numbers(values, name, row_offset)
        nan = np.isnan(out)
        if nan.any():
            i = int(np.flatnonzero(nan)[0]) + row_offset
            raise FeatureError(f"column {name!r}, row {i}: missing value (this model has no imputation)", name, i)
        return out

    def _encode_positional(self, rows: Any, row_offset: int) -> np.ndarray:
        if not self.positional:
            raise PredictorError(
                "positional rows need every input column to be numeric; send named records or a table "
                f"with the columns {', '.join(self.feature_names)}"
            )
        x = self._as_float64(rows, row_offset)
        if self.preprocessor is None:
            bad = ~np.isfinite(x)
            if bad.any():
                r, c = np.argwhere(bad)[0]
                raise PredictorError(
                    f"column {self.feature_names[c]!r}, row {r + row_offset}: missing or non-finite value "
                    f"{float(x[r, c])!r}: expected a finite number",
                    self.feature_names[c],
                    int(r) + row_offset,
                )
            with np.errstate(over="ignore"):
                x32 = x.astype(np.float32)
            if not np.isfinite(x32).all():
                r, c = np.argwhere(~np.isfinite(x32))[0]
                raise PredictorError(
                    f"column {self.feature_names[c]!r}, row {r + row_offset}: value beyond float32's range",
                    self.feature_names[c],
                    int(r) + row_offset,
                )
            return (x32 - self._mean[None, :]) / self._scale[None, :]
        return self._numeric_matrix(x, row_offset)

    def _numeric_matrix(self, v: np.ndarray, row_offset: int) -> np.ndarray:
        """``Preprocessor.transform`` for all-numeric inputs, vectorised (the same float64 ops, same bits)."""
        inf = np.isinf(v)
        if inf.any():
            r, c = np.argwhere(inf)[0]
            raise PredictorError(
                f"column {self.feature_names[c]!r}, row {r + row_offset}: non-finite value {float(v[r, c])!r}",
                self.feature_names[c],
                int(r) + row_offset,
            )
        miss = np.isnan(v)
        pre = self.preprocessor
        if pre.missing == "error" and miss.any():
            r, c = np.argwhere(miss)[0]
            raise PredictorError(
                f"column {self.feature_names[c]!r}, row {r + row_offset}: missing value (data.missing=error)",
                self.feature_names[c],
                int(r) + row_offset,
            )
        filled = np.where(miss, self._fill[None, :], v)
        z = (filled - self._center[None, :]) / self._div[None, :]
        z[:, self._const] = 0.0
        if pre.clip > 0:
            z = np.clip(z, -pre.clip, pre.clip)
        out = np.empty((len(v), self.n_inputs), np.float32)
        k = v.shape[1]
        out[:, :k] = z
        out[:, k:] = miss[:, self._indicators]
        return out

    def _as_float64(self, rows: Any, row_offset: int) -> np.ndarray:
        """Positional rows as float64 ``[n, n_features]`` (None -> NaN), or PredictorError naming the cell."""
        if isinstance(rows, np.ndarray) and rows.dtype.kind in "fiu":
            x = rows.astype(np.float64, copy=False)
        else:
            if isinstance(rows, np.ndarray) and rows.dtype != object:
                raise PredictorError(f"rows must be real numbers, got an array of dtype {rows.dtype}")
            try:
                x = np.asarray(rows, dtype=np.float64) if not _has_none(rows) else _none_to_nan(rows)
            except (TypeError, ValueError, OverflowError) as e:
                raise PredictorError(self._explain_bad_rows(rows, e, row_offset)) from None
        if x.ndim == 1:
            x = x[None, :]
        if x.ndim != 2:
            raise PredictorError(f"expected a 2-D batch of rows, got an array of rank {x.ndim}")
        if x.shape[0] == 0:
            raise PredictorError("expected at least one row, got 0")
        if x.shape[1] != self.n_features:
            raise PredictorError(f"expected {self.n_features} features per row, got {x.shape[1]}")
        return x

    def _explain_bad_rows(self, rows: Any, error: Exception, row_offset: int = 0) -> str:
        """Names the first ragged or non-numeric row of a nested sequence."""
        if (
            isinstance(rows, Sequence)
            and rows
            and all(isinstance(r, Sequence) and not isinstance(r, str) for r in rows)
        ):
            for i, r in enumerate(rows):
                if len(r) != self.n_features:
                    return f"expected {self.n_features} features per row, got {len(r)} in row {i + row_offset}"
            for i, r in enumerate(rows):
                for j, v in enumerate(r):
                    if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float, np.number))):
                        return f"column {self.feature_names[j]!r}, row {i + row_offset}: expected a number, got {v!r}"
        return f"rows must be numbers: {error}"

    def record_encoder(self) -> Any:
        """The preprocessor's one-record encoder into this predictor's input (the model matrix), or None."""
        return self.preprocessor.record_encoder() if self.preprocessor is not None else None

    def check_rows(self, rows: Any) -> np.ndarray:
        """Deprecated name of :meth:`encode` (kept for old callers)."""
        return self.encode(rows)

    # -------------------------------------------------------------------- run

    def bucket_for(self, n: int) -> int:
        i = bisect.bisect_left(self.buckets, n)
        return self.buckets[min(i, len(self.buckets) - 1)]

    def run_encoded(self, x: np.ndarray) -> np.ndarray:
        """Outputs for an encoded float32 matrix ``[n, n_inputs]`` (what the micro-batcher runs).

        Classification: probabilities ``[n, n_classes]`` float32 (an ensemble: ``[n, 2 * n_classes]``,
        the mean probabilities then the members' standard deviations; see :meth:`split`). Regression: predictions in
        the targets' original units ``[n, n_targets]`` float64. Each row's answer is
        independent of the others in ``x`` (see the module docstring), so callers may stack
        rows of several requests and slice the answer back.
        """
        top = self.buckets[-1]
        if len(x) <= top:
            out = self._run(x)
        else:
            out = np.concatenate([self._run(x[i : i + top]) for i in range(0, len(x), top)])
        if self.task == "regression":  # standardised -> original units (an ensemble's spread: scale only)
            out = out.astype(np.float64)
            t = len(self.targets)
            out[:, :t] = out[:, :t] * self._y_scale[None, :] + self._y_mean[None, :]
            if self.members > 1:
                out[:, t:] *= self._y_scale[None, :]
        return out

    #: The micro-batcher's name for :meth:`run_encoded`.
    proba_checked = run_encoded

    def _run(self, x: np.ndarray) -> np.ndarray:
        n = len(x)
        b = self.bucket_for(n)
        if n < b:
            padded = np.zeros((b, x.shape[1]), np.float32)
            padded[:n] = x
            x = padded
        # Only AOT-compiled executables are called here: a shape outside the buckets would
        # raise instead of compiling.
        return np.asarray(self._compiled[b](*self._args, x))[:n]

    def warmup(self) -> None:
        """Runs every bucket once, so the first request does not pay for first-call allocations."""
        for b in self.buckets:
            self._compiled[b](*self._args, np.zeros((b, self.n_inputs), np.float32)).block_until_ready()

    def predict_outputs(self, rows: Any) -> np.ndarray:
        """Probabilities ``[n, C]`` float32 (classification) or predictions ``[n, k]`` float64 in original units."""
        return self.run_encoded(self.encode(rows))

    def predict_proba(self, rows: Any) -> np.ndarray:
        """Class probabilities ``[n, n_classes]`` (classification only; an ensemble's mean)."""
        if self.task != "classification":
            raise PredictorError("predict_proba: this is a regression model; use predict_outputs")
        return self.split(self.predict_outputs(rows))[0]

    def split(self, outputs: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """``(values, spread or None)`` of outputs of :meth:`run_encoded`.

        Classification: probabilities ``[n, C]``; regression: predictions ``[n, T]`` in the
        targets' units. The spread (ensembles only, same shape) is the standard deviation of
        the members' probabilities per class, or of their predictions per target (same units).
        """
        if self.members == 1:
            return outputs, None
        c = len(self.classes) if self.task == "classification" else len(self.targets)
        return outputs[:, :c], outputs[:, c:]

    # -------------------------------------------------------------------- output

    def labels(self, probs: np.ndarray) -> list[Any]:
        """Original class labels of the most probable class per row."""
        idx = probs[:, : len(self.classes)].argmax(axis=1)  # an ensemble: the mean, not the spread
        return [self.classes[i] for i in idx]

    def predict(self, rows: Any) -> tuple[list[Any], np.ndarray]:
        """``(labels, probabilities)`` (classification) or ``(predictions, outputs)`` as :meth:`format` gives them."""
        out = self.predict_outputs(rows)
        if self.task == "classification":
            return self.labels(out), self.split(out)[0]
        return [r["prediction"] for r in self.format(out)], out

    def format(self, outputs: np.ndarray) -> list[dict[str, Any]]:
        """One JSON-ready dict per row.

        Classification: ``{"prediction": label, "probabilities": {str(class): p}}`` (an ensemble
        adds ``"spread": {str(class): std}``); regression: ``{"prediction": value}`` (one target)
        or ``{"prediction": [v1, v2, ...]}`` (an ensemble adds ``"spread"``: the members' standard
        deviation, a value or one per target, in the targets' units).
        """
        if self.task == "classification":
            keys = [str(c) for c in self.classes]
            labels = self.labels(outputs)
            probs, spread = self.split(outputs)
            out = [
                {"prediction": lab, "probabilities": dict(zip(keys, map(float, row), strict=True))}
                for lab, row in zip(labels, probs.tolist(), strict=True)
            ]
            if spread is not None:
                for d, row in zip(out, spread.tolist(), strict=True):
                    d["spread"] = dict(zip(keys, map(float, row), strict=True))
            return out
        values, spread = self.split(outputs)
        one = len(self.targets) == 1
        out = [{"prediction": row[0] if one else row} for row in values.tolist()]
        if spread is not None:
            for d, row in zip(out, spread.tolist(), strict=True):
                d["spread"] = row[0] if one else row
        return out

    def output_columns(self) -> list[str]:
        """Columns of :meth:`predict_frame`: ``prediction`` + ``proba_<class>`` (+ ``std_<class>`` for an
        ensemble), or ``prediction``/``prediction_<target>`` (+ ``std``/``std_<target>`` for an ensemble)."""
        if self.task == "classification":
            return ["prediction", *self.probability_columns(), *self.spread_columns()]
        return [*regression_columns(self.targets), *self.spread_columns()]

    def probability_columns(self) -> list[str]:
        return [f"proba_{c}" for c in self.classes]

    def spread_columns(self) -> list[str]:
        """For an ensemble, the members' standard deviation: ``std_<class>`` per class, or ``std`` /
        ``std_<target>`` per regression target; none for a single model."""
        if self.members == 1:
            return []
        if self.task == "classification":
            return [f"std_{c}" for c in self.classes]
        return regression_columns(self.targets, "std")

    def label_array(self, probs: np.ndarray) -> np.ndarray:
        """The predicted labels typed as trained: bool, int64, or object (text, "007" stays text)."""
        idx = probs[:, : len(self.classes)].argmax(axis=1)  # an ensemble: the mean, not the spread
        if self.classes and all(isinstance(c, bool) for c in self.classes):
            return np.asarray(self.classes, bool)[idx]
        if self.classes and all(isinstance(c, int) and not isinstance(c, bool) for c in self.classes):
            return np.asarray(self.classes, np.int64)[idx]
        return np.asarray(self.classes, dtype=object)[idx]

    def output_frame(self, outputs: np.ndarray, index: Any = None) -> Any:
        """:meth:`output_columns` as a DataFrame for outputs of :meth:`run_encoded`."""
        import pandas as pd

        if self.task == "classification":
            out = pd.DataFrame(outputs, columns=[*self.probability_columns(), *self.spread_columns()], index=index)
            out.insert(0, "prediction", pd.Series(self.label_array(outputs), index=out.index, dtype=None))
            return out
        return pd.DataFrame(outputs, columns=self.output_columns(), index=index)

    def predict_frame(self, frame: Any) -> Any:
        """A DataFrame with :meth:`output_columns`, one row per input row (same index).

        Columns are selected by name (order-independent, extra columns ignored); a missing
        one or a bad value raises PredictorError naming the column (and row).
        """
        return self.output_frame(self.predict_outputs(frame), index=frame.index)

    def shown_metrics(self) -> dict[str, Any]:
        """The metrics of the served parameters (``ArtifactMeta.metrics``), labelled with their units.

        Regression models train on standardised targets, so their epoch loss and RMSE are in
        those units: shown as ``<metric>_standardised``; with one target, ``train_rmse`` and
        ``val_rmse`` are also given in the target's own units (RMSE scales with the target's
        scale). Classification metrics are shown as they are.
        """
        metrics = dict(self.metrics)
        if self.task != "regression":
            return metrics
        shown: dict[str, Any] = {}
        for k, v in metrics.items():
            standardised = k.split("_", 1)[-1] in ("loss", "rmse") and k.startswith(("train_", "val_"))
            shown[f"{k}_standardised" if standardised else k] = v
            if standardised and k.endswith("_rmse") and len(self.targets) == 1 and isinstance(v, (int, float)):
                shown[k] = float(v) * float(self.meta.target_stats["scale"][0])
        return shown

    def describe(self) -> dict[str, Any]:
        """What ``/metadata`` shows: name, version, checkpoint, task, inputs with roles, classes/targets, metrics."""
        meta = self.meta
        return {
            "name": self.name,
            "version": self.version,
            "source": self.source,
            "checkpoint": str(self.checkpoint.path),
            "step": self.step,
            "experiment": meta.name,
            "task": self.task,
            "feature_names": list(self.feature_names),
            "input_columns": [dict(r) for r in self.roles],
            "classes": list(self.classes),
            "targets": list(self.targets),
            "output_columns": self.output_columns(),
            "n_features": self.n_features,
            "n_inputs": self.n_inputs,
            "metrics": self.shown_metrics(),
            "dataset": dataclasses.asdict(meta.data),
            "buckets": list(self.buckets),
            "members": self.members,
        }


def regression_columns(targets: Sequence[str], prefix: str = "prediction") -> list[str]:
    """``[prefix]`` for one target, ``prefix_<target>`` per target for several."""
    return [prefix] if len(targets) == 1 else [f"{prefix}_{t}" for t in targets]


def _has_none(rows: Any) -> bool:
    if isinstance(rows, np.ndarray):
        return rows.dtype == object and any(v is None for v in rows.ravel())
    if isinstance(rows, Sequence) and not isinstance(rows, (str, bytes)):
        return any(v is None for r in rows for v in (r if isinstance(r, Sequence) and not isinstance(r, str) else [r]))
    return False


def _none_to_nan(rows: Any) -> np.ndarray:
    if isinstance(rows, np.ndarray):
        rows = rows.tolist()
    if rows and not isinstance(rows[0], Sequence):
        rows = [rows]
    return np.asarray([[np.nan if v is None else v for v in r] for r in rows], dtype=np.float64)
