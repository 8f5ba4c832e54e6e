"""Wide and deep: three hidden layers of 512-256-128 with dropout 0.1 and AdamW on the baseline task.

Command:
    python -m experiments.wide_deep [key=value ...]

A bigger model for the same synthetic task: it shows the cost of width (about 10x the
baseline's FLOPs per sample) and that dropout + weight decay keep it from over-fitting.

Expected (2-core CPU): test accuracy within half a point of the baseline (about 0.98),
lower samples/s than the baseline, under a minute or two end to end.
"""

from mlp_jax.config import Config, ModelConfig, OptimConfig, TrainConfig
from mlp_jax.runner import main as run_main


def get_config() -> Config:
    return Config(
        name="wide_deep",
        model=ModelConfig(hidden_sizes=(512, 256, 128), dropout=0.1),
        optim=OptimConfig(name="adamw", learning_rate=1e-3, weight_decay=1e-4),
        train=TrainConfig(epochs=20, batch_size=512),
    )


def main(argv: list[str] | None = None) -> int:
    return run_main(get_config, argv, __doc__)


if __name__ == "__main__":
    raise SystemExit(main())
