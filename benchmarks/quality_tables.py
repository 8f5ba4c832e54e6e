"""The quality suite's tables: real data that ships inside installed packages (nothing is downloaded).

Each loader returns a :class:`TableSpec`: a DataFrame with the target column, the task, and
where the rows come from. Text columns stay text (``object`` with NaN for gaps); the harness
turns them into what each contender needs.

| name            | package          | rows | task                    | text / missing            |
| --------------- | ---------------- | ---- | ----------------------- | ------------------------- |
| breast_cancer   | scikit-learn     | 569  | binary (string labels)  | no / no                   |
| digits          | scikit-learn     | 1797 | 10 classes              | no / no                   |
| wine            | scikit-learn     | 178  | 3 classes               | no / no                   |
| iris            | scikit-learn     | 150  | 3 classes               | no / no                   |
| seattle_weather | vega_datasets    | 1461 | 5 classes (imbalanced)  | no / no                   |
| penguins        | palmerpenguins   | 344  | 3 classes               | island, sex / 2-11 rows   |
| diabetes        | scikit-learn     | 442  | regression              | no / no                   |
| cars_mpg        | vega_datasets    | 398  | regression              | Origin / Horsepower 6     |
| penguins_mass   | palmerpenguins   | 342  | regression (derived)    | species, island, sex / 9  |

``penguins_mass`` is derived from the same penguins (body mass from the other columns) so the
suite holds two regression tables with text and gaps; it is not an independent data set.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

Task = Literal["classification", "regression"]


@dataclass(frozen=True)
class TableSpec:
    name: str
    frame: pd.DataFrame  # features + target
    target: str
    task: Task
    source: str  # the package (and function) the rows come from

    @property
    def feature_frame(self) -> pd.DataFrame:
        return self.frame.drop(columns=[self.target])

    @property
    def text_columns(self) -> list[str]:
        f = self.feature_frame
        return [c for c in f.columns if not pd.api.types.is_numeric_dtype(f[c])]

    @property
    def has_missing(self) -> bool:
        return bool(self.feature_frame.isna().any().any())

    @property
    def numeric_only(self) -> bool:
        """What the library's current data layer accepts: numbers only, no gaps."""
        return not self.text_columns and not self.has_missing


def _text(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Text columns as plain ``object`` with NaN gaps (what scikit-learn's imputers expect)."""
    frame = frame.copy()
    for c in columns:
        frame[c] = frame[c].astype(object).where(frame[c].notna(), np.nan)
    return frame


def _sklearn(loader_name: str, name: str, task: Task, target: str = "target", labels: bool = False) -> TableSpec:
    import sklearn.datasets

    bunch = getattr(sklearn.datasets, loader_name)(as_frame=True)
    frame = bunch.frame.copy()
    if labels:  # original class names as strings, like a CSV would have them
        frame[target] = np.asarray(bunch.target_names)[bunch.target.to_numpy()].astype(object)
    return TableSpec(name, frame, target, task, f"scikit-learn sklearn.datasets.{loader_name}")


def breast_cancer() -> TableSpec:
    return _sklearn("load_breast_cancer", "breast_cancer", "classification", labels=True)


def digits() -> TableSpec:
    return _sklearn("load_digits", "digits", "classification")


def wine() -> TableSpec:
    return _sklearn("load_wine", "wine", "classification", labels=True)


def iris() -> TableSpec:
    return _sklearn("load_iris", "iris", "classification", labels=True)


def diabetes() -> TableSpec:
    return _sklearn("load_diabetes", "diabetes", "regression")


def seattle_weather() -> TableSpec:
    from vega_datasets import local_data

    raw = local_data.seattle_weather()
    frame = pd.DataFrame(
        {
            "month": raw["date"].dt.month.astype(np.int64),
            "precipitation": raw["precipitation"].astype(float),
            "temp_max": raw["temp_max"].astype(float),
            "temp_min": raw["temp_min"].astype(float),
            "wind": raw["wind"].astype(float),
            "weather": raw["weather"].astype(object),
        }
    )
    return TableSpec("seattle_weather", frame, "weather", "classification", "vega_datasets local_data.seattle_weather")


def penguins() -> TableSpec:
    import palmerpenguins

    frame = _text(palmerpenguins.load_penguins(), ["species", "island", "sex"])
    return TableSpec("penguins", frame, "species", "classification", "palmerpenguins load_penguins")


def penguins_mass() -> TableSpec:
    import palmerpenguins

    frame = _text(palmerpenguins.load_penguins(), ["species", "island", "sex"])
    frame = frame[frame["body_mass_g"].notna()].reset_index(drop=True)
    return TableSpec(
        "penguins_mass", frame, "body_mass_g", "regression", "palmerpenguins load_penguins (derived: body mass)"
    )


def cars_mpg() -> TableSpec:
    from vega_datasets import local_data

    raw = local_data.cars()
    frame = raw.drop(columns=["Name"])  # a per-car identifier, not a feature
    frame["Year"] = raw["Year"].dt.year.astype(np.int64)
    frame = _text(frame, ["Origin"])
    frame = frame[frame["Miles_per_Gallon"].notna()].reset_index(drop=True)
    return TableSpec("cars_mpg", frame, "Miles_per_Gallon", "regression", "vega_datasets local_data.cars")


SUITE: dict[str, Callable[[], TableSpec]] = {
    "breast_cancer": breast_cancer,
    "digits": digits,
    "wine": wine,
    "iris": iris,
    "seattle_weather": seattle_weather,
    "penguins": penguins,
    "diabetes": diabetes,
    "cars_mpg": cars_mpg,
    "penguins_mass": penguins_mass,
}


def synthetic(n_rows: int = 5000, seed: int = 0) -> TableSpec:
    """The baseline's synthetic task (``make_classification``, the library's settings), subsampled."""
    from mlp_jax.config import DataConfig
    from mlp_jax.data import make_synthetic

    frame = make_synthetic(DataConfig())
    frame = frame.sample(n=n_rows, random_state=seed).reset_index(drop=True)
    return TableSpec(f"synthetic_{n_rows // 1000}k", frame, "target", "classification", "mlp_jax.data.make_synthetic")


def load(name: str) -> TableSpec:
    if name.startswith("synthetic"):
        digits_part = "".join(ch for ch in name if ch.isdigit())
        return synthetic(int(digits_part) * 1000 if digits_part else 5000)
    if name not in SUITE:
        raise KeyError(f"unknown table {name!r}; known: {', '.join(SUITE)}, synthetic_<N>k")
    return SUITE[name]()
