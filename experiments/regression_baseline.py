"""Regression baseline: Friedman #1 (20,000 rows, 10 features, noise 1.0) with the default MLP and MSE.

Command (from the project root):
    python -m experiments.regression_baseline [key=value ...]      # --help lists every key

Writes data/friedman1.csv when missing (scikit-learn's ``make_friedman1``, seed 42), trains on
standardised targets with mean squared error, keeps the best validation epoch, and reports
test RMSE, MAE and R² in the target's units, beside scikit-learn's MLPRegressor with the same
sizes on the same split. ``train.loss=huber train.huber_delta=1.0`` switches to Huber.

Expected (2-core CPU; measured on this project's default split, seed 0): see the closing
numbers printed by the run; the task's noise (variance 1 on a target of variance ~24) caps R²
near 0.96, HistGradientBoosting scores about 0.95 and a ridge regression about 0.71.
"""

import dataclasses

from mlp_jax.config import FRIEDMAN1_PATH, Config, DataConfig, TrainConfig
from mlp_jax.runner import main as run_main


def get_config() -> Config:
    return Config(
        name="regression_baseline",
        data=dataclasses.replace(DataConfig(), path=FRIEDMAN1_PATH, target="y", task="regression"),
        train=TrainConfig(compare_sklearn=True, epochs=100, patience=10),
    )


def main(argv: list[str] | None = None) -> int:
    return run_main(get_config, argv, __doc__)


if __name__ == "__main__":
    raise SystemExit(main())
