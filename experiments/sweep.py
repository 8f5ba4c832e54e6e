"""Sweep: the baseline 20-128-64-2 MLP, 4 learning rates x 4 seeds = 16 members in one program.

Command (from the project root):
    python -m experiments.sweep [key=value ...]      # --help lists every key

Any ``sweep.<key>=<values>`` replaces or adds an axis (``sweep.optim.weight_decay=0,1e-4``;
``/`` separates the values of a tuple-valued key: ``sweep.model.hidden_sizes=64,32/128``),
``sweep.samples=N`` with ``lo:hi`` ranges draws N members at random. Trains every member
on the baseline synthetic split (one compiled program per shape), checkpoints in
checkpoints/sweep/group-<g>/ (a rerun resumes), prints the member table and the top-k
ensemble against the best single member, and writes checkpoints/sweep/summary.json (the
table, both models' validation and test log loss, where they are saved and registered).

Artifacts: the best member as a single model in checkpoints/sweep/best-member/<epoch>/ and,
with ``sweep.ensemble_top_k=K`` (K > 1, default 5 here), the top-K members of the best
member's group (one network shape) as one deep ensemble in checkpoints/sweep/ensemble-top<K>/
(served as the mean of the members' probabilities, with their standard deviation as spread).
A member no better on validation than predicting the training class frequencies (or mean) is
left out of the ensemble, and named.

Regression (``data.task=regression``): the same, with the members' mean prediction and its
standard deviation in the targets' units; the comparison and the champion gate use validation
RMSE (targets' units), and the test metrics are RMSE, MAE and R².

Tracking (``tracking.enabled``, on by default; a store that cannot be used fails before
training): one MLflow parent run, one child run per member (its config and swept values as
params, per-epoch metrics in one ``log_batch`` per member and epoch), the best member
registered in its child run and the ensemble in the parent, both through the champion gate
of ``tracking.registered_model``. A killed or failed sweep continues its parent and member
runs on rerun. An empty or malformed sweep spec is a named error before anything is written
(no run, no workdir).

Measured once with ``train.epochs=3`` on the shared 2-core CPU box (load average ~7, so the
process got ~40% of the CPU: 27 s user in 73 s real; rerun on a quiet box): 16 members in one
program, compile 13.7 s, train 21.0 s, best single member (lr 1e-2, seed 2) val log loss 0.0488,
test 0.0610; top-5 ensemble val 0.0465, test 0.0568. Expected with ``train.epochs=10`` (tracked,
load 8-14): compile 16.7 s, train 49.2 s; best member (lr 1e-2, seed 1) val 0.0436, test 0.0546;
top-5 ensemble val 0.0402, test 0.0503, promoted to champion over the best member. Speed against one member and 16
sequential runs: benchmarks/sweep_speed.py; ensemble gain on real tables: benchmarks/ensemble_gain.py.

Devices: on a host without an accelerator, one CPU device per core (``mlp_jax.distributed.use_cpu_cores``,
before JAX starts; ``XLA_FLAGS=--xla_force_host_platform_device_count=N`` overrides), the members
sharded over them. On the 2-core box, ``train.epochs=2`` untracked: "16 members in 1 program(s)
on 2 device(s): compile 1.33 s, train 3.12 s" with a warm compilation cache (5.52 s of training
on one device).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from mlp_jax.config import Config, ConfigError, SweepConfig, apply_overrides, help_text

TOP = 5


def get_config() -> Config:
    return Config(
        name="sweep",
        sweep=SweepConfig(axes=("optim.learning_rate=3e-4,1e-3,3e-3,1e-2", "seed=0,1,2,3"), ensemble_top_k=TOP),
    )


def _scores(dataset: Any, split: str, outputs: np.ndarray) -> dict[str, float]:
    """Classification: ``log_loss``, ``accuracy``. Regression: ``rmse``, ``mae``, ``r2`` (mean over targets,
    original units) and ``loss`` (MSE on standardised targets, the members' validation loss)."""
    from mlp_jax import evaluate
    from mlp_jax.sweep import log_loss

    y = getattr(dataset, f"y_{split}")
    if dataset.task == "classification":
        return {"log_loss": log_loss(y, outputs), "accuracy": float(np.mean(outputs.argmax(axis=1) == y))}
    decode = dataset.target.decode
    report = evaluate.regression_report(decode(y), decode(outputs), dataset.target_names)
    return {
        "rmse": report["rmse"],
        "mae": report["mae"],
        "r2": report["r2"],
        "loss": float(np.mean(np.square(outputs - y))),
    }


def print_table(table: list[dict[str, Any]]) -> None:
    print(f"\n{'member':>6}  {'values':<50} {'best val loss':>13} {'epoch':>5} {'run':>4}  stopped")
    for row in table:
        values = " ".join(f"{k}={v}" for k, v in row["values"].items())
        loss = "-" if row["best_val_loss"] is None else f"{row['best_val_loss']:.5f}"
        print(
            f"{row['member']:>6}  {values:<50} {loss:>13} {row['best_epoch']:>5} {row['epochs_run']:>4}  {row['stopped']}"
        )


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__.strip(), end="\n\n")
        print(help_text(get_config()))
        return 0
    try:
        config = apply_overrides(get_config(), argv)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2

    from mlp_jax import compilation_cache, distributed, sweep
    from mlp_jax import data as data_lib
    from mlp_jax.runner import check_workdir, write_json_atomic

    distributed.use_cpu_cores()  # CPU: one device per core, members sharded over them (see mlp_jax.sweep)
    compilation_cache.enable()  # as runner.run: a rerun (or a resume) reads its programs from disk
    t0 = time.perf_counter()
    workdir = Path(config.resolved_workdir).resolve()
    errors: tuple[type[BaseException], ...] = (ConfigError, data_lib.DataError, sweep.SweepError)
    try:
        check_workdir(workdir)
        dataset = data_lib.prepare(config.data, config.seed)
        members = sweep.check(config, dataset)  # every spec error now: nothing written yet
    except errors as e:
        print(f"error: {e}", file=sys.stderr)
        return 1

    session = None
    if config.tracking.enabled:
        from mlp_jax import tracking  # mlflow is imported only here

        try:
            session = tracking.start_sweep(config, dataset, members)
        except tracking.TrackingError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        errors += (tracking.TrackingError,)

    def progress(r: sweep.EpochReport) -> None:
        if session is not None:
            session.on_epoch(r)
        if config.train.progress and r.rows:
            best = min(
                (row["val_loss"] for row in r.rows.values() if row["val_loss"] is not None), default=float("nan")
            )
            stopped = "".join(f", member {i} stopped ({why})" for i, why in r.stopped.items())
            print(
                f"group {r.group} epoch {r.epoch}: {len(r.active)} active, lowest val loss this epoch {best:.4f}{stopped}",
                flush=True,
            )

    try:
        summary = _run(config, dataset, workdir, progress, session, t0)
    except BaseException as e:
        if session is not None:
            session.abort(e)
        if isinstance(e, errors):
            print(f"error: {e}", file=sys.stderr)
            return 1
        if isinstance(e, KeyboardInterrupt):  # Ctrl-C: checkpoints kept, runs ended KILLED
            print(
                f"\ninterrupted: the checkpoints so far are kept in {workdir}; run the same command again to resume",
                file=sys.stderr,
            )
            return 130
        raise
    write_json_atomic(workdir / "summary.json", summary)
    print(f"summary: {workdir / 'summary.json'}")
    return 0


def _run(config: Config, dataset: Any, workdir: Path, progress: Any, session: Any, t0: float) -> dict[str, Any]:
    from mlp_jax import sweep

    result = sweep.run_sweep(config, dataset, str(workdir), on_epoch=progress)
    table = result.table()
    print_table(table)

    classify = dataset.task == "classification"
    metric = "log_loss" if classify else "rmse"  # what the comparison and the gate use (RMSE: original units)
    ensemble: dict[str, Any] = {}
    k = config.sweep.ensemble_top_k
    # compared: the ensemble that is saved and registered (the top-k of the best member's program;
    # k = sweep.ensemble_top_k, else 5), not the global top-k, which may span programs
    ceiling = sweep.trivial_val_loss(config, dataset)
    trivial = f"predicting the training {'class frequencies' if classify else 'mean'} ({ceiling:.4g})"
    top = sweep.ensemble_members(result, k if k > 1 else TOP, ceiling)
    left_out = sorted(set(sweep.ensemble_members(result, k if k > 1 else TOP)) - set(top))
    if left_out:
        print(f"left out of the ensemble: member(s) {left_out} (of the top-k), no better on validation than {trivial}")
        ensemble["left_out"] = left_out
    ranked = sweep.top_k(result, 1)
    useless = not ranked or not ranked[0].best_val_loss < ceiling  # every member: no better than trivial
    if ranked and useless:
        print(f"no member beat {trivial}: the best member is saved but not registered")
        ensemble["no_better_than_trivial"] = True
    if len(top) > 1:
        ids = top
        for split in ("val", "test"):
            x = getattr(dataset, f"x_{split}")
            ensemble[f"top{len(ids)}_{split}_{metric}"] = _scores(dataset, split, result.predict(x, ids)[0])[metric]
            ensemble[f"best_member_{split}_{metric}"] = _scores(dataset, split, result.predict(x, ids[:1])[0])[metric]
        ensemble["top"] = ids
        name = metric.replace("_", " ") if classify else "RMSE"
        print(
            f"\ntop-{len(ids)} ensemble (members {ids}): val {name} {ensemble[f'top{len(ids)}_val_{metric}']:.5f}, "
            f"test {ensemble[f'top{len(ids)}_test_{metric}']:.5f}; best member {ids[0]}: "
            f"val {ensemble[f'best_member_val_{metric}']:.5f}, test {ensemble[f'best_member_test_{metric}']:.5f}"
        )

    models: dict[str, Any] = {}
    tracked: dict[str, Any] = {}
    plan = [("best_member", "best-member", 1)] + ([("ensemble", f"ensemble-top{k}", k)] if k > 1 else [])
    for key, folder, n in plan:
        ids = sweep.ensemble_members(result, n, ceiling)
        why = "finite member(s)" + (" better than a trivial model" if left_out or useless else "")
        if not ids or (key == "ensemble" and len(ids) < 2):
            if key == "ensemble":
                print(
                    f"no ensemble saved: the best member's program (hidden sizes, batch size, ...) has "
                    f"{len(ids) - useless} {why}; an ensemble artifact stacks members of one program"
                )
            continue
        if key == "ensemble" and len(ids) < n:  # the folder says what it holds
            folder = f"ensemble-top{len(ids)}"
            print(
                f"sweep.ensemble_top_k={n}, but the best member's program has {len(ids)} {why}: "
                f"the ensemble holds those {len(ids)}"
            )
        step = sweep.save_artifact(result, ids, dataset, workdir / folder, config)
        val = _scores(dataset, "val", result.predict(dataset.x_val, ids)[0])
        test = _scores(dataset, "test", result.predict(dataset.x_test, ids)[0])
        if classify:
            val_loss = result.members[ids[0]].best_val_loss if n == 1 else val["log_loss"]
            models[key] = {
                "members": ids,
                "checkpoint": str(step),
                "val_loss": val_loss,
                "val_accuracy": val["accuracy"],
                "test_loss": test["log_loss"],
                "test_accuracy": test["accuracy"],
            }
        else:  # the registry's gate compares validation RMSE in the targets' units
            models[key] = {
                "members": ids,
                "checkpoint": str(step),
                "val_loss": val["rmse"],
                "val_rmse": val["rmse"],
                "test_loss": test["loss"],
                **{f"test_{k}": test[k] for k in ("rmse", "mae", "r2")},
            }
        shown = f"log loss {test['log_loss']:.5f}" if classify else f"RMSE {test['rmse']:.5g}, R² {test['r2']:.4f}"
        print(f"{key.replace('_', ' ')} (members {ids}): test {shown}, saved in {step}")
    if session is not None:
        from mlp_jax.tracking import SweepModel

        def as_model(key: str) -> SweepModel | None:
            m = models.get(key)
            if m is None:
                return None
            run_id = session.children[m["members"][0]] if key == "best_member" else session.run_id
            test = {k: v for k, v in m.items() if k.startswith("test_")}
            return SweepModel(m["checkpoint"], float(m["val_loss"]), test, run_id, tuple(m["members"]))

        partial = {"experiment": config.name, "members": table, "models": models}
        best_model = None if useless else as_model("best_member")  # a useless model is not registered
        tracked = session.finish_sweep(result, partial, best_model, as_model("ensemble"))
        for key in models:
            if key in tracked:
                models[key].update({k: tracked[key][k] for k in ("model_version", "model_uri", "champion", "run_id")})

    wall = time.perf_counter() - t0
    print(
        f"{len(table)} members in {len(result.groups)} program(s) on {result.n_devices} device(s): "
        f"compile {result.compile_seconds:.2f} s, train {result.train_seconds:.2f} s, wall {wall:.1f} s"
    )
    return {
        "experiment": config.name,
        "task": dataset.task,
        "workdir": str(workdir),
        "members": table,
        "ensemble": ensemble,
        "models": models,
        "checkpoint": models.get("best_member", {}).get("checkpoint"),
        **{k: v for k, v in tracked.items() if k not in ("best_member", "ensemble")},
        "classes": list(dataset.classes),
        "targets": list(dataset.target_names) if not classify else [],
        "feature_names": list(dataset.feature_names),
        "n_devices": result.n_devices,
        "timings": {**result.timings, "wall_in_process": wall},
        "dataset": {"source": dataset.source, "digest": dataset.digest, **dataset.split_sizes()},
    }


if __name__ == "__main__":
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    raise SystemExit(main())
