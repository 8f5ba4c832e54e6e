"""The one runner every experiment hands off to: parse overrides, train, evaluate, report.

``experiments/<name>.py`` defines ``get_config()`` and calls :func:`main`. The runner
loads and validates the data before it writes anything, opens tracking (when enabled)
before training so a broken store fails fast, fits with checkpoints in the workdir,
evaluates the best parameters on the test split, writes ``plots/`` and ``summary.json``,
and prints where everything is.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from mlp_jax.config import Config, ConfigError, apply_overrides, auto_members, help_text, to_json
from mlp_jax.summary import RunSummary

_T_START = time.perf_counter()


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str))
    os.replace(tmp, path)


def check_workdir(workdir: Path) -> None:
    if workdir.exists() and not workdir.is_dir():
        raise ConfigError(f"workdir: {workdir} exists and is not a directory")


def check_workdir_kind(workdir: Path, members: int) -> None:
    """A workdir holds one kind of run: a single model's checkpoints (step folders with a train
    state) or a deep ensemble's (the members' ``group-0/`` and served step folders). Mixing them
    would resume the wrong one or serve an older model, so it is refused before training.

    Raises:
      ConfigError: naming the workdir, what it holds and what to do.
    """
    if not workdir.is_dir():
        return
    single = any(p.name.isdigit() and (p / "state").is_dir() for p in workdir.iterdir())
    if members > 1 and single:
        raise ConfigError(
            f"workdir: {workdir} holds a single model's checkpoints; train.members={members} trains an ensemble: "
            "use another workdir (e.g. workdir=checkpoints/my-table), or train.members=1 to resume that run"
        )
    from mlp_jax.sweep import group_dir

    if members == 1 and group_dir(workdir).is_dir():
        raise ConfigError(
            f"workdir: {workdir} holds an ensemble's checkpoints (group-0/); train.members=1 trains one model: "
            "use another workdir (e.g. workdir=checkpoints/my-table), or leave train.members at auto (or the ensemble's size) to resume it"
        )


def _mean_rows(histories: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per epoch, the mean of every metric over the members that trained that epoch (+ ``members_active``)."""
    by_epoch: dict[int, list[dict[str, Any]]] = {}
    for h in histories:
        for row in h:
            by_epoch.setdefault(int(row["epoch"]), []).append(row)
    out = []
    for epoch in sorted(by_epoch):
        rows = by_epoch[epoch]
        keys = [k for k in rows[0] if k not in ("epoch", "ensemble_members")]
        values = {k: [r[k] for r in rows if r.get(k) is not None and math.isfinite(r[k])] for k in keys}
        mean = {k: float(np.mean(v)) for k, v in values.items() if v}  # a non-finite member is left out
        out.append({"epoch": epoch, **mean, "members_active": len(rows)})
    return out


def _ensemble_mismatch(e: Any, cfg: Config, k: int) -> str:
    """A sweep's resume refusal (:class:`mlp_jax.sweep.SweepResumeError`) said in a run's keys.

    ``cfg`` is the :func:`mlp_jax.sweep.seeds_config` of a ``train.members=k`` run; its only
    sweep axis is ``seed=seed..seed+k-1``, so a differing ``sweep.axes`` means another member
    count (or another ``seed``, which is named by itself). Each key shows both values.
    """
    from mlp_jax.config import to_flat_dict

    old, new = to_flat_dict(e.stored), to_flat_dict(cfg)
    parts = []
    seeds = [a.partition("=")[2] for a in e.stored.sweep.axes if a.partition("=")[0].strip() == "seed"]
    old_k = len(seeds[0].split(",")) if len(e.stored.sweep.axes) == 1 and seeds else None
    if "sweep.axes" in e.differing and old_k != k:
        parts.append(f"train.members ({old_k} vs {k})" if old_k else f"sweep.axes ({old['sweep.axes']!r})")
    for key in e.differing:
        if key != "sweep.axes":
            parts.append(f"{key} ({old[key]!r} vs {new[key]!r})")
    if not parts:  # the same keys, other member values
        return str(e)
    return (
        f"it was trained (to epoch {e.step}) with another {', '.join(parts)}; "
        "rerun with the stored values or use another workdir"
    )


def check_batch_fits(config: Config, dataset: Any, members: int, member_rows: Any = None) -> None:
    """The batch-size refusal training would raise, raised before tracking opens a run (a refused run
    must leave no MLflow run behind). ``dataset`` / ``member_rows``: what the run trains on
    (:func:`mlp_jax.sweep.member_data` when ``members`` > 1).

    Raises:
      ConfigError: ``train.batch_size`` (after "auto") larger than the rows a model trains on.
    """
    from mlp_jax import sweep
    from mlp_jax.config import resolve_auto

    if members > 1:
        sweep.check(sweep.seeds_config(config, members), dataset, member_rows)
        return
    n_train = len(dataset.y_train)
    batch = resolve_auto(config, n_train).train.batch_size
    if n_train < batch:
        raise ConfigError(f"train.batch_size: {batch} is larger than the {n_train} training rows")


def fit_members(
    config: Config, dataset: Any, workdir: Path, writer: Any, k: int, members_data: tuple[Any, Any]
) -> tuple[Any, Callable, tuple[np.ndarray, np.ndarray, str]]:
    """``train.members=k`` > 1: seeds ``seed .. seed+k-1`` trained as one program (``mlp_jax.sweep``,
    each with its own early stopping; a rerun resumes from ``workdir/group-0``), all k saved as one
    ensemble artifact in ``workdir/<step>``. ``members_data``: :func:`mlp_jax.sweep.member_data`'s
    ``(dataset the members train on, k-fold member rows or None)``.

    ``train.kfold_members``: the training and validation rows are pooled and cut into k folds
    (:func:`mlp_jax.sweep.kfold_rows`, from ``seed``); member i trains on the other folds and
    early-stops on fold i, so every member sees ~(k-1)/k of the pool instead of the training rows
    alone, and the members differ in their rows as well as their seeds. The validation numbers
    are then out-of-fold: each pooled row scored by the one member that held it out.

    Returns ``(fit result, outputs, (y_val, val_outputs, kind))``: a :class:`mlp_jax.train.FitResult`
    (history: the members' mean per epoch; best epoch / epochs run: the latest member's;
    ``last_checkpoint``: the ensemble's step folder), ``outputs(x) -> [n, C]``, the members'
    mean probabilities or standardised predictions, and the validation targets with the
    outputs that score them (the ensemble's on the validation rows, ``kind`` "held-out", or the
    out-of-fold ones, "out-of-fold", on the folds of the members kept in the ensemble).
    """
    from mlp_jax import sweep, train
    from mlp_jax.config import resolve_auto

    cfg = sweep.seeds_config(config, k)
    fit_data, rows = members_data
    pooled = len(dataset.y_train) + len(dataset.y_val)
    if rows is None and config.train.kfold_members:
        print(f"k-fold members: {pooled} training + validation rows are too few for {k} folds; shared rows", flush=True)
    elif rows is not None:
        print(
            f"k-fold members: {pooled} training + validation rows in {k} folds; member i early-stops on "
            f"fold i ({np.bincount(rows.fold).min()}-{np.bincount(rows.fold).max()} rows) and trains on the rest",
            flush=True,
        )
    n_train = sweep._n_train(fit_data, rows)

    trained = [0]  # member-epochs trained by this call (a resumed run counts only its own)
    first_epoch: list[int] = []  # the first epoch this call trained (a resume starts after 1)

    def on_epoch(report: Any) -> None:
        trained[0] += len(report.rows)
        if report.rows and not first_epoch:
            first_epoch.append(report.epoch)
        if report.rows:
            row = _mean_rows([[r] for r in report.rows.values()])[0]
            writer.write_scalars(row.pop("epoch"), row)
            if config.train.progress and (report.stopped or report.epoch % 10 == 0):
                stopped = "".join(f", member {i} stopped ({why})" for i, why in report.stopped.items())
                print(
                    f"epoch {report.epoch}: {len(report.rows)} of {k} members active, mean val loss "
                    f"{row['val_loss']:.4f}{stopped}",
                    flush=True,
                )

    group_dir = sweep.group_dir(workdir)
    fresh = not group_dir.exists()
    try:
        result = sweep.run_sweep(cfg, fit_data, str(workdir), on_epoch=on_epoch, member_rows=rows)
    except sweep.SweepResumeError as e:  # said in the run's keys (train.members, seed), not the sweep's axes
        raise ConfigError(
            f"workdir: cannot resume the ensemble in {workdir} with train.members={k}: {_ensemble_mismatch(e, cfg, k)}"
        ) from None
    except sweep.SweepError as e:  # said as a run's refusal, not a sweep's
        raise ConfigError(f"workdir: cannot resume the ensemble in {workdir} with train.members={k}: {e}") from None
    ids = [m.index for m in result.members if math.isfinite(m.best_val_loss)]
    if not ids:
        if fresh:  # nothing worth resuming: a rerun with a lower learning rate must start clean
            shutil.rmtree(group_dir, ignore_errors=True)
        raise train.NonFiniteLossError(
            f"every one of the {k} members' losses was non-finite from the first epoch; lower optim.learning_rate"
        )
    if len(ids) < k:  # a member whose loss went NaN/inf before any finite best is left out, and said so
        print(f"members {sorted(set(range(k)) - set(ids))} never had a finite validation loss: left out", flush=True)
    step = sweep.save_artifact(result, ids, dataset, workdir, cfg, keep=None)
    group = result.groups[0]
    resolved = resolve_auto(config, n_train)
    steps = train.steps_per_epoch(n_train, resolved.train.batch_size)
    member_epochs = trained[0]
    fit = train.FitResult(
        state=group.state,
        best_params=group.best_params,
        history=_mean_rows([m.history for m in result.members]),
        best_epoch=max(m.best_epoch for m in result.members),
        epochs_run=max(m.epochs_run for m in result.members),
        stopped_early=all(m.stopped == "patience" for m in result.members),
        compile_seconds=result.compile_seconds,
        train_seconds=result.train_seconds,
        train_samples_per_second=member_epochs * steps * resolved.train.batch_size / max(result.train_seconds, 1e-9),
        resumed_from=(first_epoch[0] - 1 if first_epoch else max(m.epochs_run for m in result.members)) or None,
        checkpoint_seconds=result.timings.get("checkpoint", 0.0),
        last_checkpoint=str(step),
        n_devices=result.n_devices,
        config=resolved,
    )
    outputs = lambda x: result.predict(x, ids)[0]  # noqa: E731
    if rows is None:
        return fit, outputs, (dataset.y_val, outputs(dataset.x_val), "held-out")
    # out of fold only where the member that held the row out is in the ensemble: a left-out member's
    # fold was trained on by every other member, so its rows would score the ensemble in sample
    held = np.isin(rows.fold, ids)
    if not held.all():
        print(
            f"out-of-fold validation: {int(held.sum())} of {len(held)} rows (the left-out members' folds are not scored)",
            flush=True,
        )
    oof = sweep.out_of_fold(result, ids, fit_data.x_train, rows)
    return fit, outputs, (fit_data.y_train[held], oof[held], "out-of-fold")


def run(config: Config, progress: bool | None = None) -> dict[str, Any]:
    """Runs one experiment end to end; returns ``summary.json``'s content (:class:`RunSummary` +
    :class:`TrackingRecord` + timings) and writes it to the workdir."""
    from mlp_jax import compilation_cache, distributed, evaluate, train
    from mlp_jax import data as data_lib
    from mlp_jax.writer import NullWriter

    timings: dict[str, float] = {}
    workdir = Path(config.resolved_workdir).resolve()
    check_workdir(workdir)
    processes = distributed.initialize(config.dist)  # before JAX makes any array
    primary = processes.process_id == 0
    compilation_cache.enable()

    t = time.perf_counter()
    dataset = data_lib.prepare(config.data, config.seed)
    timings["data"] = time.perf_counter() - t
    what = (
        f"classes {list(dataset.classes)}"
        if dataset.task == "classification"
        else f"targets {list(dataset.target_names)}"
    )
    print(
        f"data: {dataset.source} ({dataset.split_sizes()}), {dataset.n_features} model inputs, {what}",
        flush=True,
    )

    members = auto_members(config, len(dataset.y_train), processes.num_processes)
    check_workdir_kind(workdir, members)  # before tracking: a refused workdir leaves no MLflow run
    if members > 1:
        from mlp_jax import sweep

        members_data = sweep.member_data(config, dataset, members)  # the k-fold pool and folds, or shared rows
    else:
        members_data = (dataset, None)
    check_batch_fits(config, members_data[0], members, members_data[1])  # likewise a batch larger than the rows

    session = None
    writer = NullWriter()
    if config.tracking.enabled and primary:
        t = time.perf_counter()
        from mlp_jax import tracking  # mlflow is imported only here

        session = tracking.start(config, dataset)  # fails before training if the store is unusable
        writer = session.writer
        timings["tracking_start"] = time.perf_counter() - t

    if members > 1:
        print(f"members: {members} seeds trained as one program, served as one ensemble (train.members)", flush=True)
    try:
        if members > 1:
            result, outputs, (y_val, val_out, validation) = fit_members(
                config, dataset, workdir, writer, members, members_data
            )
        else:
            validation = "held-out"
            result = train.fit(config, dataset, str(workdir), writer=writer, progress=progress)
            best_params = train.local_copy(result.best_params)  # this process's copy, even when multi-process
            graphdef = result.state.graphdef
            if dataset.task == "classification":
                outputs = lambda x: evaluate.batched_probabilities(graphdef, best_params, x)  # noqa: E731
            else:
                outputs = lambda x: evaluate.batched_outputs(graphdef, best_params, x)  # noqa: E731
        timings.update(compile=result.compile_seconds, train=result.train_seconds, checkpoint=result.checkpoint_seconds)

        t = time.perf_counter()
        plots = workdir / "plots"
        if dataset.task == "classification":
            probs = outputs(dataset.x_test)
            report = evaluate.classification_report(dataset.y_test, probs, dataset.classes)
            test_metrics = {
                "test_accuracy": report["accuracy"],
                "test_loss": report["log_loss"],
                "test_roc_auc": report.get("roc_auc", report.get("roc_auc_ovr_macro")),
            }
            best_val = {
                "best_val_loss": min((h["val_loss"] for h in result.history), default=None),
                "best_val_accuracy": next(
                    (h["val_accuracy"] for h in result.history if h["epoch"] == result.best_epoch), None
                ),
            }
            if members > 1:  # the ensemble's own validation numbers (what the champion gate compares)
                from mlp_jax.sweep import ensemble_scores

                best_val = ensemble_scores(dataset.task, y_val, val_out, "best_val_")
            figures = [
                lambda: evaluate.plot_confusion_matrix(
                    report["confusion_matrix"], dataset.classes, plots / "confusion_matrix.png"
                )
            ]
        else:
            decode = dataset.target.decode
            y_test = decode(dataset.y_test)
            pred_test = decode(outputs(dataset.x_test))
            report = evaluate.regression_report(y_test, pred_test, dataset.target_names)
            if members <= 1:
                y_val, val_out = dataset.y_val, outputs(dataset.x_val)
            val = evaluate.regression_report(decode(y_val), decode(val_out), dataset.target_names)
            test_metrics = {
                "test_rmse": report["rmse"],
                "test_mae": report["mae"],
                "test_r2": report["r2"],
                "test_loss": float(np.mean(np.square(dataset.y_test - decode_std(dataset, pred_test)))),
            }
            if len(dataset.target_names) > 1:
                for name, v in report["per_target"].items():
                    test_metrics.update({f"test_{k}_{name}": v[k] for k in ("rmse", "mae", "r2")})
            best_val = {
                "best_val_loss": min((h["val_loss"] for h in result.history), default=None),
                "best_val_rmse": val["rmse"],
                "best_val_r2": val["r2"],
            }
            if members > 1:  # the ensemble's validation MSE (standardised), not the members' mean curve
                from mlp_jax.sweep import ensemble_scores

                best_val["best_val_loss"] = ensemble_scores(dataset.task, y_val, val_out)["loss"]
            figures = [
                lambda: evaluate.plot_predicted_vs_actual(
                    y_test, pred_test, dataset.target_names, plots / "predicted_vs_actual.png"
                )
            ]
        if not primary:  # only process 0 writes plots, summary and tracking
            return {**test_metrics, "process_id": processes.process_id}
        artifacts = [
            evaluate.plot_loss_curve(result.history, plots / "loss_curve.png"),
            *(draw() for draw in figures),
            *evaluate.write_report(report, plots),
        ]
        (workdir / "config.json").write_text(json.dumps(json.loads(to_json(config)), indent=2))
        timings["evaluate"] = time.perf_counter() - t

        sklearn = None
        if config.train.compare_sklearn:
            t = time.perf_counter()
            sklearn = sklearn_reference(result.config or config, dataset)
            timings["sklearn"] = time.perf_counter() - t
        summary = RunSummary(
            experiment=config.name,
            task=dataset.task,
            workdir=str(workdir),
            metrics={**test_metrics, **best_val},
            best_epoch=result.best_epoch,
            epochs_run=result.epochs_run,
            train_budget=result.resolved,
            stopped_early=result.stopped_early,
            resumed_from_epoch=result.resumed_from,
            train_samples_per_second=result.train_samples_per_second,
            compile_seconds=result.compile_seconds,
            n_features=dataset.n_features,
            feature_names=list(dataset.feature_names),
            roles=dataset.preprocessor.roles,
            classes=list(dataset.classes),
            targets=list(dataset.target_names),
            dropped_target_rows=dataset.dropped_target_rows,
            dataset={"source": dataset.source, "digest": dataset.digest, **dataset.split_sizes()},
            checkpoint=result.last_checkpoint,
            n_devices=result.n_devices,
            n_processes=result.n_processes,
            sklearn=sklearn,
            members=members,
            validation=validation,
        )
        record = None
        if session is not None:
            t = time.perf_counter()
            record = session.finish(
                workdir=workdir,
                summary=summary,
                history=result.history,
                report=report,
                artifacts=artifacts,
                checkpoint=result.last_checkpoint,
            )
            timings["tracking"] = time.perf_counter() - t + timings.get("tracking_start", 0.0)
    except BaseException as e:
        if session is not None:
            session.abort(e)
        raise
    timings["total_in_process"] = time.perf_counter() - _T_START
    out = {**summary.to_dict(), **(record.to_dict() if record is not None else {}), "timings": timings}
    write_json_atomic(workdir / "summary.json", out)
    return out


def decode_std(dataset: Any, y: np.ndarray) -> np.ndarray:
    """Original-unit regression targets back to the standardised units the loss uses."""
    return ((y - np.asarray(dataset.target.mean)) / np.asarray(dataset.target.scale)).astype(np.float32)


def one_hot_view(dataset: Any, x: np.ndarray) -> np.ndarray:
    """``x`` with each categorical code column replaced by its one-hot block (for scikit-learn references)."""
    pre = dataset.preprocessor
    if not pre.cardinalities:
        return x
    parts = [x[:, : pre.n_dense]]
    for i, card in enumerate(pre.cardinalities):
        parts.append(np.eye(card, dtype=np.float32)[x[:, pre.n_dense + i].astype(np.int64)])
    return np.concatenate(parts, axis=1)


def sklearn_reference(config: Config, dataset: Any) -> dict[str, Any]:
    """scikit-learn's MLPClassifier / MLPRegressor with the same hidden sizes, batch, epoch budget and split."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.metrics import log_loss
    from sklearn.neural_network import MLPClassifier, MLPRegressor

    kind = MLPClassifier if dataset.task == "classification" else MLPRegressor
    est = kind(
        hidden_layer_sizes=config.model.hidden_sizes,
        activation={"relu": "relu", "tanh": "tanh"}.get(config.model.activation, "relu"),
        solver="adam",
        learning_rate_init=config.optim.learning_rate,
        batch_size=min(config.train.batch_size, len(dataset.y_train)),
        max_iter=config.train.epochs,
        early_stopping=False,
        random_state=config.seed,
    )
    x_train, x_test = one_hot_view(dataset, dataset.x_train), one_hot_view(dataset, dataset.x_test)
    y_train = dataset.y_train if dataset.task == "classification" or dataset.n_targets > 1 else dataset.y_train[:, 0]
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(x_train, y_train)
    seconds = time.perf_counter() - t
    out: dict[str, Any] = {
        "model": kind.__name__,
        "epochs": int(est.n_iter_),
        "fit_seconds": seconds,
        "train_samples_per_second": len(dataset.y_train) * est.n_iter_ / seconds,
    }
    if dataset.task == "classification":
        probs = est.predict_proba(x_test)
        out["test_accuracy"] = float(est.score(x_test, dataset.y_test))
        out["test_loss"] = float(log_loss(dataset.y_test, probs, labels=list(range(dataset.n_classes))))
        return out
    from mlp_jax import evaluate

    pred = dataset.target.decode(np.asarray(est.predict(x_test)).reshape(len(x_test), -1))
    report = evaluate.regression_report(dataset.target.decode(dataset.y_test), pred, dataset.target_names)
    out.update(test_rmse=report["rmse"], test_mae=report["mae"], test_r2=report["r2"])
    return out


def print_summary(summary: dict[str, Any]) -> None:
    if summary.get("task") == "regression":
        headline = f"test RMSE {summary['test_rmse']:.5g}  MAE {summary['test_mae']:.5g}  R2 {summary['test_r2']:.4f}"
    else:
        headline = f"test accuracy {summary['test_accuracy']:.4f}  test loss {summary['test_loss']:.4f}"
    print(
        f"\n{headline}  (best epoch {summary['best_epoch']} of {summary['epochs_run']}"
        f"{', stopped early' if summary['stopped_early'] else ''})"
    )
    if summary["train_samples_per_second"] > 0:
        print(
            f"training: {summary['train_samples_per_second']:,.0f} samples/s on {summary['n_devices']} device(s), "
            f"compile {summary['compile_seconds']:.2f} s"
        )
    else:  # a rerun of a finished run: restored, evaluated, nothing trained
        print(f"training: none this time (the checkpoint had finished at epoch {summary['epochs_run']})")
    if "sklearn" in summary:
        sk = summary["sklearn"]
        if "test_r2" in sk:
            scores = f"test RMSE {sk['test_rmse']:.5g}, R2 {sk['test_r2']:.4f}"
        else:
            scores = f"test accuracy {sk['test_accuracy']:.4f}, test loss {sk['test_loss']:.4f}"
        print(
            f"scikit-learn {sk['model']} (same split, sizes, batch, {sk['epochs']} epochs): "
            f"{scores}, {sk['train_samples_per_second']:,.0f} samples/s"
        )
    if summary.get("mlflow_run_id"):
        print(
            f"mlflow run {summary['mlflow_run_id']}; model {summary.get('registered_model')} "
            f"v{summary.get('model_version')} (champion: {summary.get('champion')})"
        )
    wd = summary["workdir"]
    print(f"outputs: {wd}/summary.json, {wd}/plots/, model checkpoint {summary['checkpoint']}")


def main(get_config: Callable[[], Config], argv: list[str] | None = None, doc: str | None = None) -> int:
    """Entry point for ``python -m experiments.<name> [key=value ...]``; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    base = get_config()
    if any(a in ("-h", "--help") for a in argv):
        if doc:
            print(doc.strip(), end="\n\n")
        print(help_text(base))
        return 0
    try:
        config = apply_overrides(base, argv)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from mlp_jax.artifact import CheckpointError
    from mlp_jax.data import DataError
    from mlp_jax.distributed import DistributedError
    from mlp_jax.train import NonFiniteLossError

    errors: tuple[type[BaseException], ...] = (
        ConfigError,
        DataError,
        CheckpointError,
        NonFiniteLossError,
        DistributedError,
    )
    if config.tracking.enabled:
        from mlp_jax.tracking import TrackingError

        errors += (TrackingError,)
    try:
        summary = run(config)
    except errors as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C: the checkpoints are kept; the MLflow run was ended KILLED
        print(
            f"\ninterrupted: the checkpoints so far are kept in {config.resolved_workdir}; "
            "run the same command again to resume",
            file=sys.stderr,
        )
        return 130
    if "experiment" in summary:  # process 0 of a multi-process run, or a single process
        print_summary(summary)
    return 0
