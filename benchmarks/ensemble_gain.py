"""Test log loss (RMSE) of the top-5 deep ensemble vs the best single member of one sweep, on several tables.

Command (from the project root):
    python -m benchmarks.ensemble_gain [--tables baseline,breast_cancer,...] [--out FILE.json]

Each table gets the same sweep: 4 learning rates (3e-4, 1e-3, 3e-3, 1e-2) x 4 seeds = 16
members in one program, the baseline network (128-64), early stopping as configured (patience
5), tracking off. The best member is the lowest validation loss; the ensemble is the top 5 by
validation loss (mean of their probabilities). Both are scored on the table's test split
(the same split for both; the split is fixed by the data seed). The tables: the synthetic
baseline (100k rows; batch 256, 10 epochs) and every table of the quality suite
(``benchmarks/quality_tables.py``: breast cancer, digits, wine, iris, Seattle weather,
penguins; the regression tables diabetes, cars_mpg, penguins_mass; batch 32, 60 epochs). The
model's other settings are the project's defaults. Regression: the ensemble is the mean of the
members' predictions, scored by RMSE in the target's units (the members are ranked by
validation MSE on the standardised target, which orders them as validation RMSE does).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("MLP_JAX_COMPILATION_CACHE", "off")

from benchmarks import quality_tables
from mlp_jax import data as data_lib
from mlp_jax import sweep
from mlp_jax.config import Config, apply_overrides

TOP = 5
#: The synthetic baseline and every table of the quality suite.
TABLES = ("baseline", *quality_tables.SUITE)


def table_csv(name: str, folder: Path) -> tuple[str, str, str]:
    """``(csv path, target column, task)`` of a quality-suite table, written under ``folder``."""
    spec = quality_tables.load(name)
    path = folder / f"{name}.csv"
    spec.frame.to_csv(path, index=False)
    return str(path), spec.target, spec.task


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
        path, target, task = table_csv(name, folder)
        items += [f"data.path={path}", f"data.target={target}", f"data.task={task}"]
        items += ["train.epochs=60", "train.batch_size=32"]
    return apply_overrides(Config(), items)


def measure(name: str, folder: Path) -> dict:
    config = config_for(name, folder)
    dataset = data_lib.prepare(config.data, config.seed)
    t = time.perf_counter()
    result = sweep.run_sweep(config, dataset)
    seconds = time.perf_counter() - t
    top = [m.index for m in sweep.top_k(result, TOP)]
    classify = dataset.task == "classification"
    out = {
        "table": name,
        "task": dataset.task,
        "rows": dataset.split_sizes(),
        "classes": len(dataset.classes),
        "seconds": seconds,
    }
    metric = out["metric"] = "log_loss" if classify else "rmse"
    for label, ids in (("best_member", top[:1]), (f"top{len(top)}", top)):
        for split, x, y in (("val", dataset.x_val, dataset.y_val), ("test", dataset.x_test, dataset.y_test)):
            mean = result.predict(x, ids)[0]
            if classify:
                out[f"{label}_{split}_log_loss"] = sweep.log_loss(y, mean)
                out[f"{label}_{split}_accuracy"] = float((mean.argmax(axis=1) == y).mean())
            else:  # original units
                err = dataset.target.decode(mean) - dataset.target.decode(y)
                out[f"{label}_{split}_rmse"] = float(np.sqrt(np.mean(np.square(err))))
    out["top"] = top
    out[f"test_{metric}_gain"] = 1 - out[f"top{len(top)}_test_{metric}"] / out[f"best_member_test_{metric}"]
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
            ens, m = f"top{len(r['top'])}", r["metric"]
            acc = (
                (f" (acc {r['best_member_test_accuracy']:.4f})", f" (acc {r[ens + '_test_accuracy']:.4f})")
                if m == "log_loss"
                else ("", "")
            )
            print(
                f"{name:<14} best member test {m.replace('_', ' ')} {r[f'best_member_test_{m}']:.4f}{acc[0]}, "
                f"{ens} ensemble {r[f'{ens}_test_{m}']:.4f}{acc[1]}, gain {100 * r[f'test_{m}_gain']:.1f}%, "
                f"sweep {r['seconds']:.1f} s",
                flush=True,
            )
    payload = {"tables": rows, "load_average": list(os.getloadavg())}
    if args.out:
        args.out.write_text(json.dumps(payload, indent=2))
    print(json.dumps(payload["load_average"]))


if __name__ == "__main__":
    main()
