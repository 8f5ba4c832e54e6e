"""Test log loss of the top-5 deep ensemble vs the best single member of one sweep, on several tables.

Command (from the project root):
    python -m benchmarks.ensemble_gain [--tables baseline,breast_cancer,...] [--out FILE.json]

Each table gets the same sweep: 4 learning rates (3e-4, 1e-3, 3e-3, 1e-2) x 4 seeds = 16
members in one program, the baseline network (128-64), early stopping as configured (patience
5), tracking off. The best member is the lowest validation loss; the ensemble is the top 5 by
validation loss (mean of their probabilities). Both are scored on the table's test split
(the same split for both; the split is fixed by the data seed). The tables: the synthetic
baseline (100k rows; batch 256, 10 epochs) and every classification table of the quality
suite (``benchmarks/quality_tables.py``: breast cancer, digits, wine, iris, Seattle weather,
penguins; batch 32, 60 epochs). The model's other settings are the project's defaults.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MLP_JAX_COMPILATION_CACHE", "off")

from benchmarks import quality_tables
from mlp_jax import data as data_lib
from mlp_jax import sweep
from mlp_jax.config import Config, apply_overrides

TOP = 5
#: The synthetic baseline and every classification table of the quality suite.
TABLES = ("baseline", *(n for n, load in quality_tables.SUITE.items() if load().task == "classification"))


def table_csv(name: str, folder: Path) -> tuple[str, str]:
    """``(csv path, target column)`` of a quality-suite table, written under ``folder``."""
    spec = quality_tables.load(name)
    path = folder / f"{name}.csv"
    spec.frame.to_csv(path, index=False)
    return str(path), spec.target


def config_for(name: str, folder: Path) -> Config:
    items = [
        "sweep.optim.learning_rate=3e-4,1e-3,3e-3,1e-2",
        "sweep.seed=0,1,2,3",
        "train.patience=5",
        "train.progress=false",
        "tracking.enabled=false",
        f"workdir={folder / name}",
        f"name={name}",
    ]
    if name == "baseline":
        items += ["train.epochs=10"]
    else:
        path, target = table_csv(name, folder)
        items += [f"data.path={path}", f"data.target={target}", "train.epochs=60", "train.batch_size=32"]
    return apply_overrides(Config(), items)


def measure(name: str, folder: Path) -> dict:
    config = config_for(name, folder)
    dataset = data_lib.prepare(config.data, config.seed)
    t = time.perf_counter()
    result = sweep.run_sweep(config, dataset)
    seconds = time.perf_counter() - t
    top = [m.index for m in sweep.top_k(result, TOP)]
    out = {"table": name, "rows": dataset.split_sizes(), "classes": len(dataset.classes), "seconds": seconds}
    for label, ids in (("best_member", top[:1]), (f"top{len(top)}", top)):
        for split, x, y in (("val", dataset.x_val, dataset.y_val), ("test", dataset.x_test, dataset.y_test)):
            probs = result.predict(x, ids)[0]
            out[f"{label}_{split}_log_loss"] = sweep.log_loss(y, probs)
            out[f"{label}_{split}_accuracy"] = float((probs.argmax(axis=1) == y).mean())
    out["top"] = top
    out["test_log_loss_gain"] = 1 - out[f"top{len(top)}_test_log_loss"] / out["best_member_test_log_loss"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables", default=",".join(TABLES))
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.tables.split(","):
            r = measure(name, Path(tmp))
            rows.append(r)
            ens = f"top{len(r['top'])}"
            print(
                f"{name:<14} best member test log loss {r['best_member_test_log_loss']:.4f} "
                f"(acc {r['best_member_test_accuracy']:.4f}), {ens} ensemble {r[ens + '_test_log_loss']:.4f} "
                f"(acc {r[ens + '_test_accuracy']:.4f}), gain {100 * r['test_log_loss_gain']:.1f}%, "
                f"sweep {r['seconds']:.1f} s",
                flush=True,
            )
    payload = {"tables": rows, "load_average": list(os.getloadavg())}
    if args.out:
        args.out.write_text(json.dumps(payload, indent=2))
    print(json.dumps(payload["load_average"]))


if __name__ == "__main__":
    main()
