"""Portable model artifacts: the forward pass as serialized StableHLO (``jax.export``) and ONNX.

``python -m mlp_jax.export --model <workdir|step folder|models:/...> --out DIR`` writes:

- ``forward.stablehlo``: ``jax.export`` serialized bytes of ``f(raw) -> outputs`` with a
  symbolic batch dimension ``b``; runs with ``jax.export.deserialize(blob).call(raw)`` (under
  ``jax.enable_x64``), no Flax and no Orbax.
- ``model.onnx`` (when the ``onnx`` extra is installed): the same function as an ONNX graph
  (opset 17, IR 9, input ``raw``, batch dimension ``batch``), checked with onnxruntime.
- ``meta.json``: the artifact's :class:`~mlp_jax.artifact.ArtifactMeta` (config, preprocessing,
  classes or targets and their statistics, metrics).
- ``signature.json``: the program's input and output, column by column, with how each raw
  value is coded (what a client in another language needs, and nothing else).

**What the program takes.** One float64 matrix ``raw [b, n_features]``, one column per input
column in ``meta.input_columns`` order:

- numeric: the number itself, NaN = missing;
- boolean: 1.0 / 0.0, NaN = missing;
- categorical: its code as a float: 0 = missing, 1 = unknown, ``2 + i`` = ``vocabulary[i]``.

Everything numeric happens inside the program, with the formulas of
:meth:`mlp_jax.features.Preprocessor.transform` (median fill, missing indicators,
``(x - center) / scale``, constant columns -> 0, clip; booleans: majority fill +
indicator), then the network, then softmax (classification: probabilities float32
``[b, n_classes]``) or ``out * scale + mean`` (regression: float64 ``[b, n_targets]`` in the
targets' original units). A deep ensemble (``meta.members`` = K > 1) runs its K members in
the same program and answers ``[b, 2 * n_outputs]``: the members' mean probabilities
(predictions) then their standard deviations, computed as :class:`~mlp_jax.predictor.Predictor`
does (float32 over the member axis, then the targets' units). Only the text -> code lookup stays on the host: it is a dictionary
lookup that ``signature.json`` (and ``meta.json``) describe completely, and string tensors
are badly supported by serving runtimes (Triton, ONNX Runtime Web, TensorRT).

Why float64 in: the host preprocessing computes ``(x - center) / scale`` in float64 and
rounds once to float32. A float32 input would already round a raw value such as a year
(2007.0, scale 0.8) or a price, an absolute error in ``z`` of ``|x| / scale * 6e-8``; with
float64 in, the program does the very same IEEE operations as the host, so the model matrix is
bit-for-bit the host's, and :class:`ExportedPredictor` matches :class:`~mlp_jax.predictor.Predictor`
(measured: bitwise on the tests' models; tested within 1e-6).

Why the ONNX graph is written here, from the parameters, and not with ``jax2onnx``:
jax2onnx 0.17.1 (the current release) requires ``orbax-checkpoint<0.11.37`` while mlp-jax
needs ``orbax-checkpoint>=0.12.8``, so an ``onnx`` extra holding it cannot be installed next to
the project (pip downgrades Orbax or refuses). The network is a handful of standard ops
(Gather, IsNaN, Where, Clip, MatMul, one-hot by Equal, embedding by Gather, Softmax), so
:func:`onnx_model` writes them with the ``onnx`` helper API; onnxruntime checks the graph
against the JAX program in the tests (within 1e-5 on 10,000 rows).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import secrets
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mlp_jax import artifact, model_uri
from mlp_jax.artifact import ArtifactMeta, CheckpointError, LoadedArtifact
from mlp_jax.features import (
    _BOOL_TOKENS,
    MISSING_SLOT,
    NULL_TOKENS,
    UNKNOWN_SLOT,
    BooleanSpec,
    CategoricalSpec,
    FeatureError,
    NumericSpec,
    Preprocessor,
    _booleans,
    _category_keys,
    _lookup,
    _numbers,
)
from mlp_jax.predictor import DEFAULT_BUCKETS, ROW_TILE, Predictor, PredictorError

#: File names inside an exported folder; ``forward.stablehlo`` marks the folder as one.
FORWARD_FILE = "forward.stablehlo"
ONNX_FILE = "model.onnx"
META_FILE = "meta.json"
SIGNATURE_FILE = "signature.json"
#: The artifact key of the exported folder inside an mlp-jax MLflow model.
EXPORTED_ARTIFACT = "exported"
#: Version of ``signature.json`` this code writes and reads.
FORMAT = 1
INPUT_NAME = "raw"
ONNX_OPSET = 17  # Triton's and most runtimes' onnxruntime builds run it
ONNX_IR_VERSION = 9


class ExportError(ValueError):
    """The export's destination cannot be written (the message names the path); nothing was written."""


#: Every file an export may write; an existing ``--out`` folder holding anything else is refused.
EXPORT_FILES = frozenset({FORWARD_FILE, ONNX_FILE, META_FILE, SIGNATURE_FILE})


def check_destination(out_dir: str | Path) -> Path:
    """``out_dir`` as the folder an export may (re)place; raises :class:`ExportError` otherwise.

    It may be missing (created, with its parents), or a folder that is empty or holds an earlier
    export (replaced as a whole); never a file, a path under a file, or a folder with other files.
    """
    given = Path(out_dir).expanduser()
    out = given.resolve() if given.is_symlink() else given
    if out.exists() and not out.is_dir():
        raise ExportError(f"cannot export to {given}: it is a file, not a folder")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ExportError(f"cannot export to {given}: {parent} is a file, not a folder")
            break
    if out.is_dir():
        try:
            others = sorted(p.name for p in out.iterdir() if p.name not in EXPORT_FILES or not p.is_file())
        except OSError as e:
            raise ExportError(f"cannot export to {given}: {e.strerror or e}") from None
        if others:
            shown = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
            raise ExportError(
                f"cannot export to {given}: the folder holds files that are not an export ({shown}); "
                "give a new folder or an earlier export's"
            )
    return out


def is_exported(path: str | Path) -> bool:
    """True for a folder written by :func:`export_artifact`."""
    return (Path(path) / FORWARD_FILE).is_file()


# ----------------------------------------------------------------------------- the program


@dataclasses.dataclass(frozen=True)
class _Layout:
    """Where each raw column goes, and the fitted constants the program applies (float64)."""

    numeric: np.ndarray  # raw column index of each numeric input, in matrix order
    fill: np.ndarray
    center: np.ndarray
    div: np.ndarray  # scale, 1.0 where the column was constant
    const: np.ndarray  # bool: constant in training -> 0
    indicators: np.ndarray  # positions within ``numeric`` that have a missing indicator
    booleans: tuple[tuple[int, float, bool], ...]  # (raw index, fill, indicator)
    categorical: np.ndarray  # raw column index of each categorical input
    clip: float


def _layout(pre: Preprocessor) -> _Layout:
    index = {s.name: i for i, s in enumerate(pre.columns)}
    num = [s for s in pre.columns if isinstance(s, NumericSpec)]
    return _Layout(
        numeric=np.asarray([index[s.name] for s in num], np.int64),
        fill=np.asarray([s.fill for s in num], np.float64),
        center=np.asarray([s.center for s in num], np.float64),
        div=np.asarray([s.scale if s.scale > 0 else 1.0 for s in num], np.float64),
        const=np.asarray([not s.scale > 0 for s in num], bool),
        indicators=np.asarray([i for i, s in enumerate(num) if s.indicator], np.int64),
        booleans=tuple((index[s.name], float(s.fill), s.indicator) for s in pre.columns if isinstance(s, BooleanSpec)),
        categorical=np.asarray([index[s.name] for s in pre.columns if isinstance(s, CategoricalSpec)], np.int64),
        clip=float(pre.clip),
    )


def _preprocessor(meta: ArtifactMeta, where: Any) -> Preprocessor:
    if meta.preprocessing.get("kind") == "standardize":
        raise CheckpointError(
            f"{where}: a format-1 artifact (standardiser only) cannot be exported; retrain it with this mlp-jax"
        )
    try:
        return Preprocessor.from_dict(meta.preprocessing)
    except (FeatureError, KeyError, TypeError) as e:
        raise CheckpointError(f"{where}: unreadable preprocessing: {e}") from None


def model_matrix(lay: _Layout, raw: jax.Array) -> jax.Array:
    """``raw`` float64 ``[b, n_features]`` -> the float32 model matrix, as ``Preprocessor.transform`` builds it."""
    parts = []
    if len(lay.numeric):
        v = raw[:, lay.numeric]
        miss = jnp.isnan(v)
        z = (jnp.where(miss, lay.fill[None, :], v) - lay.center[None, :]) / lay.div[None, :]
        z = jnp.where(lay.const[None, :], 0.0, z)
        if lay.clip > 0:
            z = jnp.clip(z, -lay.clip, lay.clip)
        parts.append(z.astype(jnp.float32))
        if len(lay.indicators):
            parts.append(miss[:, lay.indicators].astype(jnp.float32))
    for i, fill, indicator in lay.booleans:
        b = raw[:, i : i + 1]
        miss = jnp.isnan(b)
        parts.append(jnp.where(miss, fill, b).astype(jnp.float32))
        if indicator:
            parts.append(miss.astype(jnp.float32))
    if len(lay.categorical):
        parts.append(raw[:, lay.categorical].astype(jnp.float32))
    return jnp.concatenate(parts, axis=1)


def forward_fn(loaded: LoadedArtifact) -> Any:
    """``f(raw float64 [b, n_features]) -> outputs`` (see the module docstring); traced with Flax, once."""
    from mlp_jax import model as model_lib

    meta = loaded.meta
    lay = _layout(_preprocessor(meta, loaded.path))
    graphdef, params = loaded.graphdef, loaded.params
    regression = meta.task == "regression"
    if regression:
        y_mean = np.asarray(meta.target_stats["mean"], np.float64)
        y_scale = np.asarray(meta.target_stats["scale"], np.float64)

    members = meta.members

    def f(raw: jax.Array) -> jax.Array:
        x = model_matrix(lay, raw)
        if members > 1:  # as the Predictor: members' mean and std (float32), then the targets' units
            outs = jax.vmap(lambda p: model_lib.apply(graphdef, p, x))(params)
            outs = outs if regression else jax.nn.softmax(outs, axis=-1)
            mean, std = jnp.mean(outs, axis=0), jnp.std(outs, axis=0)
            if regression:
                mean = mean.astype(jnp.float64) * y_scale[None, :] + y_mean[None, :]
                std = std.astype(jnp.float64) * y_scale[None, :]
            return jnp.concatenate([mean, std], axis=1)
        out = model_lib.apply(graphdef, params, x)
        if regression:
            return out.astype(jnp.float64) * y_scale[None, :] + y_mean[None, :]
        return jax.nn.softmax(out, axis=-1)

    return f


def export_forward(loaded: LoadedArtifact) -> jax.export.Exported:
    """``jax.export`` of :func:`forward_fn` with a symbolic batch dimension ``b``."""
    n = len(loaded.meta.input_columns)
    with jax.enable_x64(True):
        (b,) = jax.export.symbolic_shape("b")
        return jax.export.export(jax.jit(forward_fn(loaded)))(jax.ShapeDtypeStruct((b, n), jnp.float64))


# ----------------------------------------------------------------------------- signature


def signature(meta: ArtifactMeta, step: int, source: str, onnx_written: bool) -> dict[str, Any]:
    """``signature.json``: the input layout with each column's coding, and the output."""
    pre = _preprocessor(meta, source)
    columns = []
    for s in pre.columns:
        if isinstance(s, NumericSpec):
            columns.append({"name": s.name, "role": "numeric", "coding": "the number; NaN = missing"})
        elif isinstance(s, BooleanSpec):
            columns.append(
                {
                    "name": s.name,
                    "role": "boolean",
                    "coding": "1.0 = true, 0.0 = false, NaN = missing; text maps through tokens (stripped, lower case)",
                    "tokens": dict(_BOOL_TOKENS),
                }
            )
        else:
            columns.append(
                {
                    "name": s.name,
                    "role": "categorical",
                    "kind": s.kind,
                    "coding": (
                        f"{MISSING_SLOT}.0 = missing (null or a missing token), {UNKNOWN_SLOT}.0 = any value not in "
                        "the vocabulary, 2.0 + i = vocabulary[i]"
                        + (
                            "; numbers are keyed as text, integers without '.0' (3 == 3.0 == '3')"
                            if s.kind == "number"
                            else ""
                        )
                    ),
                    "vocabulary": list(s.vocabulary),
                }
            )
    classify = meta.task == "classification"
    names = [str(c) for c in meta.classes] if classify else list(meta.targets)
    spread = [f"std_{c}" for c in names] if meta.members > 1 else []
    return {
        "kind": "mlp_jax.export",
        "format": FORMAT,
        "step": step,
        "source": source,
        "jax": jax.__version__,
        "task": meta.task,
        "input": {"name": INPUT_NAME, "dtype": "float64", "shape": [-1, len(pre.columns)], "columns": columns},
        "missing_tokens": list(NULL_TOKENS),
        "missing": pre.missing,
        "members": meta.members,
        "output": {  # an ensemble: the members' means, then their standard deviations (std_<column>)
            "name": "probabilities" if classify else "predictions",
            "dtype": "float32" if classify else "float64",
            "shape": [-1, meta.n_outputs * (2 if spread else 1)],
            "columns": names + spread,
        },
        "files": {"stablehlo": FORWARD_FILE, "onnx": ONNX_FILE if onnx_written else None, "meta": META_FILE},
    }


# ----------------------------------------------------------------------------- ONNX


def onnx_model(loaded: LoadedArtifact) -> Any:
    """The forward pass as an ONNX ``ModelProto`` (see the module docstring for why it is written here).

    Raises:
      ImportError: the ``onnx`` package is not installed.
    """
    import onnx
    from flax import nnx
    from onnx import TensorProto, helper, numpy_helper

    meta = loaded.meta
    lay = _layout(_preprocessor(meta, loaded.path))
    k = meta.members
    nets = [
        nnx.merge(loaded.graphdef, loaded.params if k == 1 else jax.tree.map(lambda a, i=i: a[i], loaded.params))
        for i in range(k)
    ]
    nodes: list[Any] = []
    inits: list[Any] = []
    counter = iter(range(1 << 30))

    def const(value: Any, dtype: Any) -> str:
        name = f"c{next(counter)}"
        inits.append(numpy_helper.from_array(np.asarray(value, dtype), name))
        return name

    def op(kind: str, *inputs: str, **attrs: Any) -> str:
        out = f"{kind.lower()}{next(counter)}"
        nodes.append(helper.make_node(kind, list(inputs), [out], **attrs))
        return out

    f32 = TensorProto.FLOAT
    parts = []  # the dense block, shared by every member
    if len(lay.numeric):
        v = op("Gather", INPUT_NAME, const(lay.numeric, np.int64), axis=1)
        miss = op("IsNaN", v)
        z = op(
            "Div",
            op("Sub", op("Where", miss, const(lay.fill, np.float64), v), const(lay.center, np.float64)),
            const(lay.div, np.float64),
        )
        z = op("Where", const(lay.const, bool), const(np.zeros(len(lay.numeric)), np.float64), z)
        if lay.clip > 0:
            z = op("Clip", z, const(-lay.clip, np.float64), const(lay.clip, np.float64))
        parts.append(op("Cast", z, to=f32))
        if len(lay.indicators):
            parts.append(op("Cast", op("Gather", miss, const(lay.indicators, np.int64), axis=1), to=f32))
    for i, fill, indicator in lay.booleans:
        b = op("Gather", INPUT_NAME, const([i], np.int64), axis=1)
        miss = op("IsNaN", b)
        parts.append(op("Cast", op("Where", miss, const(fill, np.float64), b), to=f32))
        if indicator:
            parts.append(op("Cast", miss, to=f32))
    codes = None
    if len(lay.categorical):
        # float64 -> float32 -> int (truncation), as the network reads the model matrix
        codes = op(
            "Cast",
            op("Cast", op("Gather", INPUT_NAME, const(lay.categorical, np.int64), axis=1), to=f32),
            to=TensorProto.INT64,
        )

    def dense(x: str, layer: Any) -> str:
        w = const(np.asarray(layer.kernel[...], np.float32), np.float32)
        return op("Add", op("MatMul", x, w), const(np.asarray(layer.bias[...], np.float32), np.float32))

    def network(net: Any) -> str:
        """One member: its categorical inputs (embedding tables are parameters), hidden layers, head."""
        inputs = list(parts)
        if codes is not None:
            embeds = iter(net.embeddings)
            for j, (card, dim) in enumerate(zip(net.cardinalities, net.embedding_dims, strict=True)):
                c = op(
                    "Clip",
                    op("Gather", codes, const(j, np.int64), axis=1),
                    const(0, np.int64),
                    const(card - 1, np.int64),
                )
                if dim > 0:
                    table = np.asarray(next(embeds).embedding[...], np.float32)
                    inputs.append(op("Gather", const(table, np.float32), c, axis=0))
                else:
                    hot = op("Equal", op("Unsqueeze", c, const([1], np.int64)), const(np.arange(card), np.int64))
                    inputs.append(op("Cast", hot, to=f32))
        h = inputs[0] if len(inputs) == 1 else op("Concat", *inputs, axis=1)
        for layer in net.hidden:
            h = _onnx_activation(op, const, dense(h, layer), net.activation)
        out = dense(h, net.head)
        return op("Softmax", out, axis=-1) if meta.task == "classification" else out

    outs = [network(net) for net in nets]
    classify = meta.task == "classification"
    name, elem = ("probabilities", f32) if classify else ("predictions", TensorProto.DOUBLE)
    ystats = meta.target_stats if not classify else {}

    def to_units(x: str, shift: bool) -> str:  # regression: float32 standardised -> float64 targets' units
        scaled = op("Mul", op("Cast", x, to=TensorProto.DOUBLE), const(ystats["scale"], np.float64))
        return op("Add", scaled, const(ystats["mean"], np.float64)) if shift else scaled

    if k == 1:
        final = outs[0] if classify else to_units(outs[0], True)
    else:  # members' mean and (population) standard deviation over a leading member axis
        stack = op("Concat", *(op("Unsqueeze", o, const([0], np.int64)) for o in outs), axis=0)
        mean = op("ReduceMean", stack, axes=[0], keepdims=0)
        dev = op("Sub", stack, op("Unsqueeze", mean, const([0], np.int64)))
        std = op("Sqrt", op("ReduceMean", op("Mul", dev, dev), axes=[0], keepdims=0))
        final = (
            op("Concat", mean, std, axis=1)
            if classify
            else op("Concat", to_units(mean, True), to_units(std, False), axis=1)
        )
    nodes.append(helper.make_node("Identity", [final], [name]))
    width = meta.n_outputs * (2 if k > 1 else 1)
    graph = helper.make_graph(
        nodes,
        "mlp_jax_forward",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.DOUBLE, ["batch", len(meta.input_columns)])],
        [helper.make_tensor_value_info(name, elem, ["batch", width])],
        inits,
    )
    model = helper.make_model(
        graph,
        producer_name="mlp-jax",
        opset_imports=[helper.make_opsetid("", ONNX_OPSET)],
        ir_version=ONNX_IR_VERSION,
        doc_string=f"{meta.name or 'mlp-jax'} step {loaded.step}: raw float64 columns {list(meta.input_columns)}",
    )
    onnx.checker.check_model(model, full_check=True)
    return model


def _onnx_activation(op: Any, const: Any, x: str, activation: str) -> str:
    """The ops of ``mlp_jax.model.ACTIVATIONS`` (gelu: JAX's default tanh approximation)."""
    if activation == "relu":
        return op("Relu", x)
    if activation == "tanh":
        return op("Tanh", x)
    if activation == "silu":
        return op("Mul", x, op("Sigmoid", x))
    if activation == "gelu":
        cube = op("Mul", op("Mul", x, x), x)
        inner = op(
            "Mul", op("Add", x, op("Mul", cube, const(0.044715, np.float32))), const(np.sqrt(2 / np.pi), np.float32)
        )
        half = op("Mul", x, const(0.5, np.float32))
        return op("Mul", half, op("Add", op("Tanh", inner), const(1.0, np.float32)))
    raise CheckpointError(f"activation {activation!r} has no ONNX translation here")


# ----------------------------------------------------------------------------- writing


def export_artifact(loaded: LoadedArtifact, out_dir: str | Path, onnx: bool | None = None) -> dict[str, Path]:
    """Writes the exported folder (see the module docstring); returns ``{kind: path}`` of the files written.

    ``onnx``: None writes ``model.onnx`` when the ``onnx`` package is installed; True requires
    it; False skips it. The folder is built beside ``out_dir`` and swapped in at the end, so an
    earlier export there is replaced as a whole (no stale ``model.onnx`` survives a ``--no-onnx``
    export) and a failed export leaves it untouched; ``forward.stablehlo`` is written last.

    Raises:
      ExportError: ``out_dir`` is a file, lies under a file, or is a folder with other files.
      CheckpointError: a format-1 artifact, or an activation without an ONNX translation.
      ImportError: ``onnx=True`` without the ``onnx`` package.
      OSError: the folder could not be written (permissions, disk full).
    """
    out = check_destination(out_dir)
    if onnx is None:
        try:
            import onnx as _  # noqa: F401
        except ImportError:
            onnx = False
        else:
            onnx = True
    exp = export_forward(loaded)
    onnx_bytes = onnx_model(loaded).SerializeToString() if onnx else None
    created = [p for p in out.parents if not p.exists()]  # removed again (deepest first) if the export fails
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.export-{os.getpid()}-{secrets.token_hex(4)}")
    old = out.with_name(f".{out.name}.old-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        tmp.mkdir()
        if onnx_bytes is not None:
            (tmp / ONNX_FILE).write_bytes(onnx_bytes)
        (tmp / META_FILE).write_text(loaded.meta.to_json())
        sig = signature(loaded.meta, loaded.step, str(loaded.path), onnx_written=bool(onnx))
        (tmp / SIGNATURE_FILE).write_text(json.dumps(sig, indent=1))
        (tmp / FORWARD_FILE).write_bytes(exp.serialize())
        if out.exists():
            out.rename(old)
        try:
            tmp.rename(out)
        except BaseException:
            if old.exists():
                old.rename(out)
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for folder in created:
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    shutil.rmtree(old, ignore_errors=True)
    paths: dict[str, Path] = {}
    if onnx_bytes is not None:
        paths["onnx"] = out / ONNX_FILE
    paths["meta"] = out / META_FILE
    paths["signature"] = out / SIGNATURE_FILE
    paths["stablehlo"] = out / FORWARD_FILE
    return paths


# ----------------------------------------------------------------------------- host side


def raw_matrix(pre: Preprocessor, frame: Any, row_offset: int = 0) -> tuple[np.ndarray, dict[str, int]]:
    """Rows (a DataFrame) -> ``(raw float64 [n, n_features], unknown values per categorical column)``.

    The host half of ``Preprocessor.transform``: numbers and booleans parsed (NaN = missing),
    text looked up in the vocabulary; the rest happens in the exported program.

    Raises:
      FeatureError: a value that is not a number / boolean, a non-finite number, or a missing
        value under ``data.missing=error`` (named with column and row).
    """
    raw = np.empty((len(frame), len(pre.columns)), np.float64)
    unknown: dict[str, int] = {}
    vocab = pre._vocabularies
    for j, s in enumerate(pre.columns):
        if isinstance(s, CategoricalSpec):
            keys, null = _category_keys(frame[s.name], s.kind)
            codes = _lookup(keys, vocab[s.name]) + 2  # -1 (not in the vocabulary) -> 1 = unknown
            codes[null] = MISSING_SLOT
            unknown[s.name] = int((codes == UNKNOWN_SLOT).sum())
            raw[:, j] = codes
            continue
        parse = _numbers if isinstance(s, NumericSpec) else _booleans
        raw[:, j] = parse(frame[s.name], s.name, row_offset)
        pre._check_missing(s.name, np.isnan(raw[:, j]), row_offset)
    return raw, unknown


@dataclasses.dataclass(frozen=True)
class ExportedSource:
    """Stands in for the checkpoint an exported folder came from (``path`` is the folder)."""

    path: Path
    step: int


class ExportedPredictor(Predictor):
    """A :class:`~mlp_jax.predictor.Predictor` over an exported folder: ``meta.json`` + ``forward.stablehlo``.

    Nothing of the training code runs: no Flax module is built and no Orbax checkpoint is
    read; the program is ``jax.export.deserialize``-d and AOT-compiled per batch bucket. The
    outputs and every output helper (``format``, ``predict_frame``, ``label_array``, ...)
    are the Predictor's, inherited, so the service, the batch command and the pyfunc treat
    both alike. What differs:

    - :meth:`encode` returns the program's input, ``raw`` float64 ``[n, n_features]`` (see the
      module docstring), and :attr:`n_inputs` is its width (``n_features``);
    - :meth:`run_encoded` runs the exported program (preprocessing, network, softmax or the
      targets' units are inside it);
    - named records go through the DataFrame path (no few-record fast path).

    Rows still go through the program in tiles of ``ROW_TILE`` (``lax.map`` over the exported
    call at batch 32), so a row's answer has the same bits whatever else is in its batch.
    """

    def __init__(
        self,
        folder: str | Path,
        buckets: Sequence[int] = DEFAULT_BUCKETS,
        source: str | None = None,
        name: str | None = None,
        version: str | None = None,
    ):
        folder = Path(folder).expanduser().resolve()
        try:
            meta = ArtifactMeta.from_json((folder / META_FILE).read_text())
            sig = json.loads((folder / SIGNATURE_FILE).read_text())
            blob = bytearray((folder / FORWARD_FILE).read_bytes())
        except OSError as e:
            raise CheckpointError(f"{folder}: not a complete exported model: {e}") from None
        if sig.get("kind") != "mlp_jax.export" or sig.get("format") != FORMAT:
            raise CheckpointError(f"{folder}: {SIGNATURE_FILE} is not an mlp-jax export of format {FORMAT}")
        self.checkpoint = ExportedSource(folder, int(sig["step"]))
        self.source = source or str(folder)
        self.meta = meta
        self.name = name or meta.name or folder.name
        self.version = version or f"step-{self.checkpoint.step}"
        self.task = meta.task
        self.members = meta.members  # an ensemble's program answers means then standard deviations
        self.feature_names = tuple(meta.input_columns)
        self.classes = tuple(meta.classes) if self.task == "classification" else ()
        self.targets = tuple(meta.targets) if self.task == "regression" else ()
        self.n_features = len(self.feature_names)
        self.metrics = meta.metrics
        if not buckets or min(int(b) for b in buckets) < 1:
            raise ValueError(f"buckets must be positive batch sizes, got {buckets}")
        self.buckets = tuple(sorted({-(-int(b) // ROW_TILE) * ROW_TILE for b in buckets}))
        self.preprocessor = _preprocessor(meta, folder)
        if self.preprocessor.input_columns != self.feature_names:
            raise CheckpointError(f"{folder}: preprocessing columns differ from the input columns")
        self._roles = tuple(self.preprocessor.roles)
        self.positional = all(isinstance(s, NumericSpec) for s in self.preprocessor.columns)
        self.n_inputs = self.n_features

        exported = jax.export.deserialize(blob)
        (aval,) = exported.in_avals
        if aval.shape[1:] != (self.n_features,) or aval.dtype != np.float64:
            raise CheckpointError(f"{folder}: the program takes {aval}, not float64[b, {self.n_features}]")

        def forward(x: jax.Array) -> jax.Array:
            n, width = x.shape
            if n == ROW_TILE:
                return exported.call(x)
            return jax.lax.map(exported.call, x.reshape(n // ROW_TILE, ROW_TILE, width)).reshape(n, -1)

        self._args = ()
        jitted = jax.jit(forward)
        with jax.enable_x64(True):
            self._compiled = {
                b: jitted.lower(jax.ShapeDtypeStruct((b, self.n_features), jnp.float64)).compile() for b in self.buckets
            }

    @property
    def step(self) -> int:
        return self.checkpoint.step

    # -------------------------------------------------------------------- encode

    def _fast_records(self, rows: Any) -> None:
        return None

    def record_encoder(self) -> None:
        """None: this predictor's input is the raw matrix, not the preprocessed model matrix."""
        return None

    def _encode_frame(self, frame: Any, row_offset: int) -> tuple[np.ndarray, dict[str, int]]:
        self._check_frame(frame)
        try:
            return raw_matrix(self.preprocessor, frame, row_offset)
        except FeatureError as e:
            raise PredictorError(str(e), e.column, e.row) from None

    def _numeric_matrix(self, v: np.ndarray, row_offset: int) -> np.ndarray:
        """Positional rows (all-numeric model) are the program's input once checked."""
        bad = np.isinf(v) | (np.isnan(v) if self.preprocessor.missing == "error" else False)
        if bad.any():
            r, c = np.argwhere(bad)[0]
            what = "missing value (data.missing=error)" if np.isnan(v[r, c]) else f"non-finite value {float(v[r, c])!r}"
            raise PredictorError(
                f"column {self.feature_names[c]!r}, row {r + row_offset}: {what}",
                self.feature_names[c],
                int(r) + row_offset,
            )
        return v

    # -------------------------------------------------------------------- run

    def run_encoded(self, x: np.ndarray) -> np.ndarray:
        """Outputs for ``raw`` float64 ``[n, n_features]``: probabilities float32, or float64 in the targets' units."""
        top = self.buckets[-1]
        if len(x) <= top:
            return self._run(x)
        return np.concatenate([self._run(x[i : i + top]) for i in range(0, len(x), top)])

    proba_checked = run_encoded

    def _run(self, x: np.ndarray) -> np.ndarray:
        n = len(x)
        b = self.bucket_for(n)
        if n < b or x.dtype != np.float64:
            padded = np.zeros((b, self.n_features), np.float64)
            padded[:n] = x
            x = padded
        with jax.enable_x64(True):
            return np.asarray(self._compiled[b](x))[:n]

    def warmup(self) -> None:
        with jax.enable_x64(True):
            for b in self.buckets:
                self._compiled[b](np.zeros((b, self.n_features), np.float64)).block_until_ready()

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "exported": True}


# ----------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m mlp_jax.export --model MODEL --out DIR [--onnx | --no-onnx]``."""
    from mlp_jax import model_uri

    p = argparse.ArgumentParser(prog="python -m mlp_jax.export", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="workdir, step folder or models:/ / runs:/ URI")
    p.add_argument(
        "--out", required=True, help="folder to write (created; an earlier export there is replaced as a whole)"
    )
    p.add_argument(
        "--onnx",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="write model.onnx (default: when onnx is installed)",
    )
    args = p.parse_args(argv)
    try:
        check_destination(args.out)  # before loading the model: a bad --out fails fast
        loaded = artifact.load(model_uri.resolve(args.model).path)
        paths = export_artifact(loaded, args.out, onnx=args.onnx)
    except ExportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (CheckpointError, ImportError) as e:
        print(f"error: cannot export --model {args.model}: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: cannot write --out {args.out}: {e}", file=sys.stderr)
        return 2
    for kind, path in paths.items():
        print(f"{kind:<10} {path} ({path.stat().st_size:,} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


def load_predictor(model: str | Path, buckets: Sequence[int] = DEFAULT_BUCKETS) -> Predictor:
    """A predictor for any model reference: an exported folder (:class:`ExportedPredictor`), a
    workdir, a step folder or an MLflow URI (:meth:`Predictor.load`).

    The one loader the service, the batch command and the pyfunc use, so ``--model`` accepts all of them.

    Raises:
      mlp_jax.artifact.CheckpointError: the path is missing, not a model, or damaged.
    """
    where = model_uri.resolve(model)
    if (where.path / FORWARD_FILE).is_file():
        return ExportedPredictor(where.path, buckets, source=where.source, name=where.name, version=where.version)
    return Predictor(artifact.load(where.path), buckets, source=where.source, name=where.name, version=where.version)
