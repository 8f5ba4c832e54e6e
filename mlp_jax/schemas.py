"""Typed request and response bodies of the prediction service (msgspec Structs).

Every endpoint's body is one of these, so the OpenAPI document (``/schema/openapi.json``)
describes all of them, ``/invocations`` and ``/metadata`` included.
"""

from __future__ import annotations

from typing import Any

import msgspec

#: A raw cell: a number, a text, a boolean, or null (missing: imputed as in training).
Value = int | float | str | bool | None
#: A class label as trained.
Label = int | float | str | bool


class PredictRequest(msgspec.Struct, forbid_unknown_fields=True):
    """One row (``features``) or many (``instances``).

    A row is a named record ``{"column": value, ...}`` (every input column, no other key) or,
    for models whose inputs are all numeric, a list of values in training column order.
    """

    features: list[Value] | dict[str, Value] | None = None
    instances: list[list[Value] | dict[str, Value]] | None = None


class Prediction(msgspec.Struct, omit_defaults=True):
    """Classification, one row: the class label and one probability per class (in ``classes`` order).

    An ensemble's probabilities are its members' mean; ``spread`` (ensembles only, absent for
    a single model) is the members' standard deviation per class: their disagreement.
    """

    prediction: Label
    probabilities: list[float]
    classes: list[Label]
    spread: list[float] | None = None


class Predictions(msgspec.Struct, omit_defaults=True):
    """Classification, many rows, in request order (``spread``: ensembles only, one list per row)."""

    predictions: list[Label]
    probabilities: list[list[float]]
    classes: list[Label]
    spread: list[list[float]] | None = None


class RegressionPrediction(msgspec.Struct, omit_defaults=True):
    """Regression, one row: the value, or one value per target (in ``targets`` order).

    An ensemble's prediction is its members' mean; ``spread`` (ensembles only, absent for a
    single model) is the members' standard deviation, in the targets' units.
    """

    prediction: float | list[float]
    targets: list[str]
    spread: float | list[float] | None = None


class RegressionPredictions(msgspec.Struct, omit_defaults=True):
    """Regression, many rows, in request order (``spread``: ensembles only, one entry per row)."""

    predictions: list[float | list[float]]
    targets: list[str]
    spread: list[float | list[float]] | None = None


class DataframeSplit(msgspec.Struct, forbid_unknown_fields=True):
    columns: list[str]
    data: list[list[Value]]
    index: list[Any] | None = None


class InvocationsRequest(msgspec.Struct, forbid_unknown_fields=True):
    """MLflow's scoring protocol (JSON): exactly one of the four input keys; ``params`` is accepted and ignored.

    ``instances`` / ``inputs``: a list of rows, a list of records, or columns ``{name: [values]}``.
    The same endpoint takes ``text/csv`` (a header row naming the columns).
    """

    dataframe_split: DataframeSplit | None = None
    dataframe_records: list[dict[str, Value]] | None = None
    instances: Any = None
    inputs: Any = None
    params: dict[str, Any] | None = None


class InvocationsResponse(msgspec.Struct):
    """As MLflow's scoring server answers a pyfunc returning a DataFrame: one record per row.

    Classification records: ``prediction`` and ``proba_<class>``; regression: ``prediction``
    (one target) or ``prediction_<target>``.
    """

    predictions: list[dict[str, Any]]


class MlflowError(msgspec.Struct):
    """An ``/invocations`` error, as MLflow's scoring server words one."""

    error_code: str
    message: str


class Problem(msgspec.Struct, omit_defaults=True):
    """Any other error: the HTTP status and what is wrong."""

    status_code: int
    detail: str
    extra: Any = None


class Health(msgspec.Struct):
    status: str


class Readiness(msgspec.Struct):
    ready: bool
    model: str
    version: str
    buckets: list[int]


class InputColumn(msgspec.Struct):
    name: str
    role: str
    dtype: str
    nullable: bool


class Metadata(msgspec.Struct):
    """Where the model came from, what it takes and gives, its test metrics and the request limits."""

    name: str
    version: str
    source: str
    checkpoint: str
    step: int
    experiment: str | None
    task: str
    feature_names: list[str]
    input_columns: list[InputColumn]
    classes: list[Label]
    targets: list[str]
    output_columns: list[str]
    n_features: int
    n_inputs: int
    metrics: dict[str, Any]
    dataset: dict[str, Any]
    buckets: list[int]
    max_rows: int
    max_body_bytes: int
    members: int = 1  # > 1: a deep ensemble (mean of the members' probabilities, std as spread)
