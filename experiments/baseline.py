"""Baseline: the synthetic make_classification task with a 20-128-64-2 MLP, Adam, batch 256.

Command (from the project root):
    python -m experiments.baseline [key=value ...]      # --help lists every key

Writes data/classification_data.csv when missing (100,000 rows, 20 features, 2 classes),
trains up to 30 epochs with early stopping (patience 5) and checkpoints in
checkpoints/baseline/, and also fits scikit-learn's MLPClassifier with the same sizes on
the same split for comparison.

Expected (2-core CPU): test accuracy about 0.98 (at least scikit-learn's on the same split),
roughly 0.5M+ training samples/s, well under a minute end to end.
"""

from mlp_jax.config import Config, TrainConfig
from mlp_jax.runner import main as run_main


def get_config() -> Config:
    return Config(name="baseline", train=TrainConfig(compare_sklearn=True))


def main(argv: list[str] | None = None) -> int:
    return run_main(get_config, argv, __doc__)


if __name__ == "__main__":
    raise SystemExit(main())
