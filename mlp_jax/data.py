"""Rows in, arrays out: synthetic generation, CSV loading and validation, split, standardiser.

``python -m mlp_jax.data [--out PATH] [key=value ...]`` writes the synthetic task
(scikit-learn's ``make_classification``) as a CSV with a header and a ``target`` column.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlp_jax.config import SYNTHETIC_PATH, DataConfig


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
    :func:`load_csv` to report.
    """
    if Path(cfg.path) != Path(SYNTHETIC_PATH) or Path(cfg.path).exists():
        return False
    write_csv_atomic(make_synthetic(cfg), cfg.path)
    return True


# ----------------------------------------------------------------------------- CSV


@dataclass(frozen=True)
class Table:
    """A validated CSV: float32 features, original labels, names, and a content digest."""

    x: np.ndarray  # [rows, features] float32
    labels: np.ndarray  # [rows] original labels (int or str)
    feature_names: tuple[str, ...]
    source: str
    digest: str  # sha256 of the file bytes (first 16 hex digits)


def file_digest(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def load_csv(path: str | os.PathLike, target: str) -> Table:
    """Reads and validates a CSV with a header and a target column.

    Raises:
      DataError: missing or empty file, missing target column, no feature columns,
        a non-numeric feature column, missing values, or fewer than two classes.
    """
    p = Path(path)
    if not p.exists():
        raise DataError(f"data file not found: {p.resolve()}")
    if p.is_dir():
        raise DataError(f"data path is a directory, not a CSV file: {p.resolve()}")
    if p.stat().st_size == 0:
        raise DataError(f"data file is empty: {p.resolve()}")
    try:
        frame = pd.read_csv(p, engine="pyarrow")
    except Exception as e:  # pyarrow / pandas parse errors have many types
        raise DataError(f"cannot parse CSV {p}: {e}") from None
    if frame.shape[0] == 0:
        raise DataError(f"data file {p} has a header but 0 data rows")
    if target not in frame.columns:
        raise DataError(f"target column {target!r} not found in {p}; columns are: {', '.join(map(str, frame.columns))}")
    features = frame.drop(columns=[target])
    if features.shape[1] == 0:
        raise DataError(f"{p} has no feature columns besides the target {target!r}")
    bad = [
        str(c)
        for c in features.columns
        if not pd.api.types.is_numeric_dtype(features[c]) or pd.api.types.is_bool_dtype(features[c])
    ]
    if bad:
        raise DataError(f"{p}: feature column(s) must be numeric, not: {', '.join(bad)}")
    missing = features.isna().sum()
    missing = missing[missing > 0]
    if len(missing):
        where = ", ".join(f"{c} ({n} rows)" for c, n in missing.items())
        raise DataError(f"{p}: missing values in feature column(s): {where}")
    n_missing_target = int(frame[target].isna().sum())
    if n_missing_target:
        raise DataError(f"{p}: target column {target!r} has {n_missing_target} missing value(s)")
    x = features.to_numpy(dtype=np.float32)
    if not np.isfinite(x).all():
        cols = [str(c) for c, ok in zip(features.columns, np.isfinite(x).all(axis=0), strict=True) if not ok]
        raise DataError(f"{p}: non-finite values (inf, or too large for float32) in column(s): {', '.join(cols)}")
    labels = normalise_labels(frame[target].to_numpy())
    n_classes = len(np.unique(labels))
    if n_classes < 2:
        raise DataError(f"{p}: target column {target!r} has {n_classes} class(es); a classifier needs at least 2")
    return Table(x, labels, tuple(map(str, features.columns)), str(p.resolve()), file_digest(p))


def normalise_labels(raw: np.ndarray) -> np.ndarray:
    """Integer-valued labels become int64, everything else str (so JSON keeps them exactly)."""
    if raw.dtype.kind in "iub":
        return raw.astype(np.int64)
    if raw.dtype.kind == "f" and np.all(np.mod(raw, 1) == 0):
        return raw.astype(np.int64)
    return raw.astype(str)


# ----------------------------------------------------------------------------- split + scale


@dataclass(frozen=True)
class Standardizer:
    """``(x - mean) / scale`` with statistics fitted on the training split only."""

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
    """Standardised splits with integer class indices, plus what a predictor needs."""

    x_train: np.ndarray
    y_train: np.ndarray  # int32 indices into classes
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    feature_names: tuple[str, ...]
    classes: tuple[Any, ...]  # original labels, index i = class i
    standardizer: Standardizer
    source: str
    digest: str

    @property
    def n_features(self) -> int:
        return self.x_train.shape[1]

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def split_sizes(self) -> dict[str, int]:
        return {"train": len(self.y_train), "val": len(self.y_val), "test": len(self.y_test)}


def split_and_standardise(table: Table, cfg: DataConfig, seed: int) -> Dataset:
    """Stratified train/val/test split (seeded), standardiser fitted on train only."""
    from sklearn.model_selection import train_test_split

    classes, y = np.unique(table.labels, return_inverse=True)
    n = len(y)
    n_test = max(round(cfg.test_fraction * n), len(classes))
    n_val = max(round(cfg.val_fraction * n), len(classes))
    counts = np.bincount(y)
    if counts.min() < 3 or n - n_test - n_val < len(classes):
        rare = classes[np.argmin(counts)]
        raise DataError(
            f"{table.source}: too few rows to split stratified into train/val/test "
            f"({n} rows; class {rare!r} has {counts.min()}; each class needs at least 3)"
        )
    idx = np.arange(n)
    try:
        rest, test = train_test_split(idx, test_size=n_test, stratify=y, random_state=seed)
        train, val = train_test_split(rest, test_size=n_val, stratify=y[rest], random_state=seed + 1)
    except ValueError as e:
        raise DataError(f"{table.source}: cannot split stratified: {e}") from None
    scaler = Standardizer.fit(table.x[train])

    def part(ix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return scaler.transform(table.x[ix]), y[ix].astype(np.int32)

    (xtr, ytr), (xva, yva), (xte, yte) = part(train), part(val), part(test)
    return Dataset(
        xtr,
        ytr,
        xva,
        yva,
        xte,
        yte,
        feature_names=table.feature_names,
        classes=tuple(c.item() if hasattr(c, "item") else c for c in classes),
        standardizer=scaler,
        source=table.source,
        digest=table.digest,
    )


def prepare(cfg: DataConfig, seed: int) -> Dataset:
    """Generates the synthetic CSV if needed, loads, validates, splits and standardises."""
    ensure_synthetic(cfg)
    return split_and_standardise(load_csv(cfg.path, cfg.target), cfg, seed)


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
