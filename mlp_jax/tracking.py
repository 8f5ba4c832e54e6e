"""MLflow tracking: the MLflow metric writer and the run's lifecycle (registration: :mod:`mlp_jax.registry`).

The runner calls :func:`start` before training (a store that cannot be used is a
:class:`TrackingError` then, not after an hour of training), hands ``session.writer`` to
the fit loop (one ``log_batch`` per epoch), and calls :meth:`Session.finish` after the
test evaluation: test metrics, plots, report, the pyfunc model (``mlp_jax/pyfunc.py``),
a new registry version and the champion/challenger gate. On failure it calls
:meth:`Session.abort`, which marks the run FAILED and deletes a version it had begun.

Store: ``tracking.uri``, else ``MLFLOW_TRACKING_URI``, else MLflow's default
``sqlite:///<cwd>/mlflow.db`` with artifacts under ``./mlruns``. A SQLite store elsewhere keeps
the artifacts of the experiments it creates beside the database (:func:`artifacts_beside`).

Resumed training: the run id is kept in ``<workdir>/mlflow_run.json``. When training
resumes from a checkpoint of a run that did not finish (crashed, killed, FAILED), the same
MLflow run continues; epochs it already holds are not logged twice (a resume is bitwise
identical). When that run had finished, a new run starts, tagged
``mlp_jax.continues_run``, and gets the full metric history from the checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import queue
import threading
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # before mlflow is imported
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per file otherwise

import mlflow
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from mlp_jax import model_uri, registry
from mlp_jax.artifact import CheckpointError, resolve
from mlp_jax.config import Config, to_flat_dict, to_json
from mlp_jax.summary import RunSummary, TrackingRecord

RUN_FILE = "mlflow_run.json"
EPOCH_METRICS = (
    "train_loss",
    "train_accuracy",
    "train_rmse",
    "val_loss",
    "val_accuracy",
    "val_rmse",
    "learning_rate",
    "samples_per_second",
    "epoch_seconds",
)


class TrackingError(RuntimeError):
    """The tracking store cannot be used, or the run could not be recorded; the message says why."""


# ----------------------------------------------------------------------------- store


def resolve_uri(config: Config) -> str:
    """``tracking.uri``, else ``MLFLOW_TRACKING_URI``, else ``sqlite:///<cwd>/mlflow.db``."""
    return config.tracking.uri or mlflow.get_tracking_uri()


def check_store(uri: str, create: bool = True, timeout: float = 5.0) -> None:
    """:func:`mlp_jax.model_uri.check_store`, raising :class:`TrackingError`."""
    try:
        model_uri.check_store(uri, create=create, timeout=timeout)
    except model_uri.StoreError as e:
        raise TrackingError(str(e)) from None


def _param_value(v: Any) -> str:
    return ",".join(map(str, v)) if isinstance(v, tuple) else str(v)


def _now_ms() -> int:
    return int(time.time() * 1000)


# ----------------------------------------------------------------------------- writer


class _BatchSender:
    """One background thread that sends ``(run_id, metrics)`` batches with ``log_batch``, in order.

    :meth:`flush` waits until all are sent and raises :class:`TrackingError` naming ``what``
    failed (how many, and the first error), in the caller's thread.
    """

    def __init__(self, client: MlflowClient, thread_name: str):
        self.client = client
        self._thread_name = thread_name
        self._queue: queue.Queue[tuple[str, list[Metric]] | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._errors: list[Exception] = []

    def put(self, run_id: str, metrics: list[Metric]) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._send, name=self._thread_name, daemon=True)
            self._thread.start()
        self._queue.put((run_id, metrics))

    def _send(self) -> None:
        while (item := self._queue.get()) is not None:
            try:
                self.client.log_batch(item[0], metrics=item[1])
            except Exception as e:  # reported by flush(), in the caller's thread
                self._errors.append(e)

    def flush(self, what: str) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None
        if self._errors:
            errors, self._errors = self._errors, []
            raise TrackingError(f"{len(errors)} {what} were not recorded: {type(errors[0]).__name__}: {errors[0]}")


class MlflowWriter:
    """The :class:`mlp_jax.writer.MetricWriter` back end: one ``log_batch`` per epoch.

    The batches are sent by a background thread, so a slow store (an fsync of the SQLite
    file, a round trip to a server: 10-300 ms here) never stalls an epoch that takes
    ~0.1 s; :meth:`flush` waits for them and raises what failed. (MLflow's own
    ``synchronous=False`` logging costs up to a second at interpreter exit.)
    """

    def __init__(self, client: MlflowClient, run_id: str, logged_steps: set[int] | None = None):
        self.client = client
        self.run_id = run_id
        self.logged_steps = set(logged_steps or ())  # epochs the run already holds (a continued run)
        self._sender = _BatchSender(client, "mlflow-epoch-metrics")

    def write_hparams(self, params: Mapping[str, Any]) -> None:
        items = [Param(k, _param_value(v)) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow's per-batch limit for params
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        if step in self.logged_steps:
            return
        ts = _now_ms()
        metrics = [Metric(k, float(v), ts, int(step)) for k, v in scalars.items() if math.isfinite(float(v))]
        self._sender.put(self.run_id, metrics)
        self.logged_steps.add(int(step))

    def write_artifact(self, path: str | Path, folder: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), folder)

    def flush(self) -> None:
        """Waits until every queued epoch is recorded.

        Raises:
          TrackingError: naming how many epoch batches failed and the first error.
        """
        self._sender.flush(f"epoch metric batch(es) of MLflow run {self.run_id}")

    def close(self) -> None:
        self.flush()


# ----------------------------------------------------------------------------- session


def _dataset_entity(dataset: Any) -> Any:
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.types import ColSpec, Schema

    inputs = [ColSpec(r["dtype"], r["name"], required=not r["nullable"]) for r in dataset.preprocessor.roles]
    if dataset.task == "regression":
        outputs = [ColSpec("double", name) for name in dataset.target_names]
    else:
        classes = dataset.classes
        label = (
            "boolean"
            if all(isinstance(c, bool) for c in classes)
            else "long"
            if all(isinstance(c, int) for c in classes)
            else "string"
        )
        outputs = [ColSpec(label, name) for name in dataset.target_names]  # the real label column's name
    schema = Schema([*inputs, *outputs])
    try:
        with warnings.catch_warnings():  # MLflow registers two equivalent local sources and warns that it picked one
            warnings.simplefilter("ignore", UserWarning)
            source = resolve_dataset_source(dataset.source)
    except MlflowException:
        from mlflow.data.code_dataset_source import CodeDatasetSource

        source = CodeDatasetSource({"source": str(dataset.source)})
    return MetaDataset(source=source, name=Path(str(dataset.source)).stem, digest=dataset.digest, schema=schema)


def _read_run_file(workdir: Path) -> dict[str, Any] | None:
    try:
        previous = json.loads((workdir / RUN_FILE).read_text())
    except (OSError, ValueError):
        return None
    return previous if isinstance(previous, dict) else None


def _has_checkpoint(workdir: Path) -> bool:
    """A model checkpoint in ``workdir``, or a ``train.members`` ensemble's training checkpoint
    (``workdir/group-0/<epoch>``: killed before its first ensemble artifact was saved)."""
    from mlp_jax.sweep import group_dir

    try:
        resolve(workdir)
    except CheckpointError:
        return _has_steps(group_dir(workdir))
    return True


def _has_steps(folder: Path) -> bool:
    """``folder`` holds an Orbax step folder (``<epoch>/``)."""
    return folder.is_dir() and any(p.name.isdigit() and p.is_dir() for p in folder.iterdir())


class Session:
    """One tracked run: the writer for the fit loop, then :meth:`finish` or :meth:`abort`."""

    def __init__(self, config: Config, dataset: Any, uri: str, client: MlflowClient, run_id: str, continued: bool):
        self.config = config
        self.dataset = dataset
        self.uri = uri
        self.client = client
        self.run_id = run_id
        self.continued = continued
        self.mlflow_dataset = _dataset_entity(dataset)
        self.writer = MlflowWriter(client, run_id)
        self._pending_version: str | None = None
        self._done = False
        self.workdir: Path | None = None  # where mlflow_run.json goes (keep_run_file)
        self._run_file_before: str | None = None

    def keep_run_file(self, workdir: Path) -> None:
        """Remembers ``workdir``'s run file as it is before this session replaces it, for :meth:`abort`."""
        self.workdir = workdir
        try:
            self._run_file_before = (workdir / RUN_FILE).read_text()
        except OSError:
            self._run_file_before = None

    def _trained_nothing(self) -> bool:
        """No epoch was logged by this session (a failure before training: a refused resume, bad data)."""
        return not self.writer.logged_steps

    def _put_back_run_file(self) -> None:
        """A new run that failed before training gives the workdir its previous run file back, so a
        run killed earlier can still be continued by the next correct rerun."""
        if self.workdir is None or self.continued or not self._trained_nothing():
            return
        if self._run_file_before is None:
            (self.workdir / RUN_FILE).unlink(missing_ok=True)
        else:
            _write_run_file(self.workdir, self._run_file_before)

    # ------------------------------------------------------------------ start

    def record_start(self, previous: str | None) -> None:
        """Params, config, dataset input and tags; a continued run keeps the params it has."""
        flat = {k: _param_value(v) for k, v in to_flat_dict(self.config).items()}
        tags = {
            "mlp_jax.experiment": self.config.name,
            "mlp_jax.workdir": str(Path(self.config.resolved_workdir).resolve()),
            "dataset_digest": self.dataset.digest,
            "dataset_source": str(self.dataset.source),
        }
        if previous:
            tags["mlp_jax.continues_run"] = previous
        if self.continued:
            self.writer.logged_steps = {m.step for m in self.client.get_metric_history(self.run_id, "val_loss")}
            have = self.client.get_run(self.run_id).data.params
            changed = {k: v for k, v in flat.items() if k in have and have[k] != v}
            flat = {k: v for k, v in flat.items() if k not in have}
            tags.update({f"mlp_jax.resume_changed.{k}": f"{have[k]} -> {v}" for k, v in changed.items()})
            tags["mlp_jax.resumed_at"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        self.writer.write_hparams(flat)
        self.client.log_batch(self.run_id, tags=[RunTag(k, v) for k, v in tags.items()])
        if not self.continued:
            mlflow.log_input(
                self.mlflow_dataset,
                context="training",
                tags={f"rows_{k}": str(v) for k, v in self.dataset.split_sizes().items()},
            )
        self.client.log_dict(self.run_id, json.loads(to_json(self.config)), "config.json")

    # ------------------------------------------------------------------ finish

    def finish(
        self,
        workdir: Path,
        summary: RunSummary,
        history: list[dict[str, Any]],
        report: Mapping[str, Any],
        artifacts: list[Path],
        checkpoint: str | None,
    ) -> TrackingRecord:
        """Records the results, registers the model, runs the champion gate and ends the run.

        Returns where the run landed (the runner adds it to ``summary.json``).

        Raises:
          TrackingError: the results could not be recorded (the run is marked FAILED and
            no half-registered version is left behind).
        """
        cfg = self.config.tracking
        client, run_id = self.client, self.run_id
        try:
            self.writer.flush()
            missing = [h for h in history if int(h["epoch"]) not in self.writer.logged_steps]
            if missing:  # epochs trained before a resume into a new run, or never logged
                ts = _now_ms()
                metrics = [
                    Metric(k, float(h[k]), ts, int(h["epoch"])) for h in missing for k in EPOCH_METRICS if k in h
                ]
                for i in range(0, len(metrics), 1000):
                    client.log_batch(run_id, metrics=metrics[i : i + 1000])
                self.writer.logged_steps.update(int(h["epoch"]) for h in missing)
            for path in artifacts:
                client.log_artifact(run_id, str(path), "plots")
            final = self._final_metrics(summary, report)
            client.log_batch(
                run_id,
                tags=[
                    RunTag("mlp_jax.resumed_from_epoch", str(summary.resumed_from_epoch)),
                    RunTag("mlp_jax.best_checkpoint", str(checkpoint)),
                ],
            )
            out = TrackingRecord(
                mlflow_run_id=run_id,
                mlflow_experiment_id=client.get_run(run_id).info.experiment_id,
                mlflow_tracking_uri=self.uri,
                registered_model=cfg.registered_model,
            )
            if checkpoint is None:
                mlflow.log_metrics(final, run_id=run_id, dataset=self.mlflow_dataset)
                print("mlflow: no checkpoint to register", flush=True)
            else:
                reg = self._register(checkpoint, summary, final)
                out = dataclasses.replace(
                    out,
                    model_version=reg.model_version,
                    model_uri=reg.model_uri,
                    champion=reg.champion,
                    champion_gate=reg.gate,
                )
            record = {**summary.to_dict(), **out.to_dict()}
            client.log_dict(run_id, json.loads(json.dumps(record, default=str)), "summary.json")
            self._end("FINISHED")
            self._pending_version = None
        except TrackingError:
            raise
        except Exception as e:
            raise TrackingError(f"recording MLflow run {run_id} at {self.uri} failed: {type(e).__name__}: {e}") from e
        self.write_run_file(workdir, "FINISHED")
        return out

    def _final_metrics(self, summary: RunSummary, report: Mapping[str, Any]) -> dict[str, float]:
        values = {
            **summary.metrics,
            "test_macro_f1": report.get("macro_avg", {}).get("f1-score"),
            "test_weighted_f1": report.get("weighted_avg", {}).get("f1-score"),
            "best_epoch": summary.best_epoch,
            "epochs_run": summary.epochs_run,
            "train_samples_per_second_mean": summary.train_samples_per_second,
            "compile_seconds": summary.compile_seconds,
        }
        return {k: float(v) for k, v in values.items() if v is not None and math.isfinite(float(v))}

    def _register(self, checkpoint: str, summary: RunSummary, final: dict[str, float]) -> registry.Registration:
        """Logs the model, registers a version and runs the champion gate (:mod:`mlp_jax.registry`);
        a model already registered (a rerun that trained nothing) gets its version back instead."""
        from mlp_jax import pyfunc

        metric = registry.GATE_METRICS[self.dataset.task]
        val_loss = float(summary.metric(metric) or math.nan)
        name = self.config.tracking.registered_model
        validation = self._validation_set(summary.validation)
        existing = registry.already_registered(self.client, name, checkpoint, val_loss, metric, validation)
        if existing is not None:
            mlflow.log_metrics(final, run_id=self.run_id, dataset=self.mlflow_dataset)
            return existing
        info = pyfunc.log_model(
            checkpoint,
            params={k: _param_value(v) for k, v in to_flat_dict(self.config).items()},
        )
        # test metrics on the run and on the logged model, linked to the dataset
        mlflow.log_metrics(final, run_id=self.run_id, model_id=info.model_id, dataset=self.mlflow_dataset)
        return registry.register(
            self.client,
            info,
            run_id=self.run_id,
            name=name,
            experiment=self.config.name,
            val_loss=val_loss,
            metric=metric,
            dataset_digest=self.dataset.digest,
            dataset_source=str(self.dataset.source),
            test_accuracy=final.get("test_accuracy"),
            pending=self._set_pending,
            validation=validation,
            checkpoint=checkpoint,
        )

    def _validation_set(self, scored: str = "held-out") -> str:
        """The gate's comparability key: this run's file, target(s), task and split, and the rows
        that scored it (``scored``: the summary's ``validation``, e.g. k-fold members' out-of-fold rows)."""
        d = self.config.data
        return registry.validation_set(
            self.dataset.digest,
            self.dataset.task,
            d.target_names,
            self.config.seed,
            d.val_fraction,
            d.test_fraction,
            scored,
        )

    def _set_pending(self, version: str | None) -> None:
        """Registry callback: the version being registered (deleted by :meth:`abort` on failure)."""
        self._pending_version = version

    # ------------------------------------------------------------------ failure

    def abort(self, exc: BaseException | None = None) -> None:
        """Marks the run FAILED (KILLED on Ctrl-C) and removes a version this session began registering.

        Never raises: the original error is what the caller should see.
        """
        if self._done:
            return
        try:
            self.writer.flush()
        except Exception as e:
            print(f"mlflow: some epoch metrics of run {self.run_id} were not recorded: {e}", flush=True)
        try:
            self._delete_pending()
            if exc is not None:
                self.client.set_tag(self.run_id, "mlp_jax.error", f"{type(exc).__name__}: {exc}"[:5000])
        except Exception as e:  # the store may be what failed
            print(f"mlflow: could not record the failure of run {self.run_id}: {e}", flush=True)
        try:
            self._end("KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
        except Exception as e:
            print(f"mlflow: could not end run {self.run_id}: {e}", flush=True)
        try:
            self._put_back_run_file()
        except OSError as e:
            print(f"mlflow: could not restore {RUN_FILE} in {self.workdir}: {e}", flush=True)

    def _delete_pending(self) -> None:
        if self._pending_version is not None:
            version, self._pending_version = self._pending_version, None
            self.client.delete_model_version(self.config.tracking.registered_model, version)

    def _end(self, status: str) -> None:
        active = mlflow.active_run()
        if active is not None and active.info.run_id == self.run_id:
            mlflow.end_run(status)
        else:
            self.client.set_terminated(self.run_id, status)
        self._done = True

    def write_run_file(self, workdir: Path, status: str) -> None:
        _write_run_file(workdir, {"run_id": self.run_id, "tracking_uri": self.uri, "status": status})


def _write_run_file(workdir: Path, payload: Mapping[str, Any] | str) -> None:
    """``workdir/mlflow_run.json`` (which run a rerun continues; a payload or its text), replaced atomically."""
    workdir.mkdir(parents=True, exist_ok=True)
    tmp = workdir / f".{RUN_FILE}.tmp"
    tmp.write_text(payload if isinstance(payload, str) else json.dumps(payload, indent=2))
    os.replace(tmp, workdir / RUN_FILE)


def artifacts_beside(uri: str) -> str | None:
    """Where a new experiment keeps its artifacts: ``<folder of the database>/mlruns`` for a SQLite
    store outside the working directory, else None (MLflow's default, ``./mlruns`` here).

    MLflow resolves its default against the directory each run starts in, so runs of one
    store started from different folders would scatter their artifacts (and registered
    models) over those folders; beside the database they stay with the store.
    """
    prefix = "sqlite:///"
    if not uri.startswith(prefix):
        return None
    folder = Path(uri[len(prefix) :]).expanduser().resolve().parent
    return None if folder == Path.cwd().resolve() else (folder / "mlruns").as_uri()


def _open_experiment(config: Config, uri: str) -> tuple[MlflowClient, Any]:
    """The client and the (created if missing) experiment; the registered model name is checked."""
    cfg = config.tracking
    if uri != mlflow.get_tracking_uri():  # an explicit tracking.uri: MLflow's fluent calls need it too
        mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(cfg.experiment)
    if experiment is None:
        client.create_experiment(cfg.experiment, artifact_location=artifacts_beside(uri))
        experiment = client.get_experiment_by_name(cfg.experiment)
    elif experiment.lifecycle_stage != "active":
        raise TrackingError(
            f"MLflow experiment {cfg.experiment!r} is deleted in {uri}; restore it or set tracking.experiment"
        )
    try:
        client.get_registered_model(cfg.registered_model)
    except MlflowException as e:
        if e.error_code == "INVALID_PARAMETER_VALUE":
            raise TrackingError(f"tracking.registered_model {cfg.registered_model!r}: {e.message}") from None
        if e.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
    return client, experiment


def _usable_store(config: Config) -> str:
    """The store's URI, after checking it answers and the registered-model name is not empty."""
    if not config.tracking.registered_model.strip():
        raise TrackingError("tracking.registered_model must name a registered model")
    uri = resolve_uri(config)
    check_store(uri)
    return uri


@dataclass(frozen=True)
class _Previous:
    """What ``workdir/mlflow_run.json`` says about the run before this one (:func:`_previous_run`)."""

    file: dict[str, Any] | None  # the run file's content (None: none, or damaged)
    continue_id: str | None = None  # an interrupted run this one continues
    follows: str | None = None  # a finished run this one follows (tag mlp_jax.continues_run)
    stranded: tuple[str, ...] = ()  # runs left RUNNING by an invocation killed before its first checkpoint


def _previous_run(
    client: MlflowClient, workdir: Path, uri: str, experiment_id: str, has_checkpoint: Callable[[Path], bool]
) -> _Previous:
    """The run before this one in ``workdir``, and what to do with it.

    The run recorded in ``workdir/mlflow_run.json`` is continued when it is in this store and
    experiment, still there, not finished, and ``workdir`` holds a checkpoint to resume; a
    finished one (or one in another experiment) is followed by a new run instead. One still
    RUNNING with no checkpoint to resume was killed before its first one: nothing can
    continue it, so it (and its member runs) are ``stranded``, to be ended.
    """
    previous = _read_run_file(workdir)
    if not previous or previous.get("tracking_uri") != uri:
        return _Previous(previous)
    if not isinstance(previous.get("run_id"), str) or not previous["run_id"]:  # a damaged file: as none
        return _Previous(None)
    try:
        old = client.get_run(previous["run_id"])
    except MlflowException:
        return _Previous(previous)
    if old.info.lifecycle_stage != "active":
        return _Previous(previous)
    if not has_checkpoint(workdir):
        if old.info.status != "RUNNING":
            return _Previous(previous)
        children = previous.get("children")
        kids = tuple(str(r) for r in children.values()) if isinstance(children, dict) else ()
        return _Previous(previous, stranded=(old.info.run_id, *kids))
    if old.info.status == "FINISHED" or old.info.experiment_id != experiment_id:
        return _Previous(previous, follows=old.info.run_id)
    return _Previous(previous, continue_id=old.info.run_id)


def _end_stranded(client: MlflowClient, runs: tuple[str, ...], successor: str) -> None:
    """Marks runs of an invocation killed before its first checkpoint FAILED, naming the run that
    replaced them (their own process is gone; nothing else would ever end them)."""
    for run_id in runs:
        try:
            if client.get_run(run_id).info.status != "RUNNING":
                continue
            client.set_tag(
                run_id, "mlp_jax.error", f"killed before its first checkpoint; the rerun is MLflow run {successor}"
            )
            client.set_terminated(run_id, "FAILED")
        except MlflowException as e:
            print(f"mlflow: could not end the interrupted run {run_id}: {e}", flush=True)


def _start_run(config: Config, experiment_id: str, continue_id: str | None) -> str:
    """Starts (fluent, nested under an active run if any) the run ``continue_id`` or a new one."""
    nested = mlflow.active_run() is not None
    if continue_id:
        return mlflow.start_run(run_id=continue_id, nested=nested).info.run_id
    return mlflow.start_run(experiment_id=experiment_id, run_name=config.name, nested=nested).info.run_id


def start(config: Config, dataset: Any) -> Session:
    """Opens (or continues) the MLflow run for ``config`` before training.

    Raises:
      TrackingError: the store is unreachable, locked or not writable, or the registered
        model name is refused; nothing has been trained yet.
    """
    cfg = config.tracking
    uri = _usable_store(config)
    workdir = Path(config.resolved_workdir).resolve()
    session = None
    try:
        client, experiment = _open_experiment(config, uri)
        prev = _previous_run(client, workdir, uri, experiment.experiment_id, _has_checkpoint)
        continue_id = prev.continue_id
        run_id = _start_run(config, experiment.experiment_id, continue_id)
        session = Session(config, dataset, uri, client, run_id, continued=bool(continue_id))
        session.keep_run_file(workdir)
        session.record_start(prev.follows)
        _end_stranded(client, prev.stranded, run_id)
        session.write_run_file(workdir, "RUNNING")
    except TrackingError:
        raise
    except Exception as e:
        if session is not None:
            session.abort(e)
        first_line = (str(e).strip().splitlines() or [""])[0]  # SQLAlchemy appends the SQL and a link
        raise TrackingError(
            f"MLflow store {uri} is not usable ({type(e).__name__}: {first_line}); nothing was trained. "
            "Fix the store or run with tracking.enabled=false"
        ) from e
    how = "continuing run" if continue_id else "run"
    browse = f" (browse: mlflow ui --backend-store-uri {uri})" if uri.startswith("sqlite:") else ""
    print(f"mlflow: {how} {session.run_id} in experiment {cfg.experiment!r} at {uri}{browse}", flush=True)
    return session


# ----------------------------------------------------------------------------- sweeps


class RunsWriter:
    """Epoch metrics of many runs (a sweep's members) sent by one background thread.

    One ``log_batch`` per run and epoch (all of a member's metrics of that epoch in one
    call), in the order given; :meth:`flush` waits and raises what failed.
    """

    def __init__(self, client: MlflowClient):
        self.client = client
        self.logged: dict[str, set[int]] = {}
        self._sender = _BatchSender(client, "mlflow-sweep-metrics")

    def write_scalars(self, run_id: str, step: int, scalars: Mapping[str, Any]) -> None:
        """Queues one member's epoch; an epoch the run already holds (retrained after a resume:
        bitwise the same values) is skipped."""
        logged = self.logged.setdefault(run_id, set())
        if int(step) in logged:
            return
        ts = _now_ms()
        metrics = [
            Metric(k, float(v), ts, int(step))
            for k, v in scalars.items()
            if k != "epoch" and isinstance(v, (int, float)) and math.isfinite(float(v))
        ]
        self._sender.put(run_id, metrics)
        logged.add(int(step))

    def flush(self) -> None:
        self._sender.flush("member epoch metric batch(es)")


@dataclass(frozen=True)
class SweepModel:
    """A model a sweep registers: its artifact step folder and the numbers the gate and the version need."""

    checkpoint: str
    val_loss: float
    test_metrics: dict[str, float]
    run_id: str  # the run that logs it: the member's child run, or the parent for an ensemble
    members: tuple[int, ...]


class SweepSession(Session):
    """A tracked sweep: the parent run (this session's run) and one child run per member.

    Children get the member's full config and swept values as params, and their epoch
    metrics (``on_epoch``: one ``log_batch`` per member and epoch, in the background);
    :meth:`finish_sweep` fills in epochs trained before a resume, records each member's
    result, registers the best member (logged in its child run) and optionally the
    ensemble (logged in the parent run), both through the champion gate.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.children: dict[int, str] = {}
        self.runs_writer = RunsWriter(self.client)

    def start_children(self, members: list[Any], experiment_id: str) -> None:
        for m in members:
            run = self.client.create_run(
                experiment_id,
                run_name=f"{self.config.name}-member-{m.index}",
                tags={
                    "mlflow.parentRunId": self.run_id,
                    "mlp_jax.sweep_member": str(m.index),
                    "mlp_jax.sweep_values": _sweep_values_tag(m),
                    "dataset_digest": self.dataset.digest,
                },
            )
            self.children[m.index] = run.info.run_id
            # the member's own config (its sweep section is empty: the sweep's spec is the parent's)
            params = [
                Param(k, _param_value(v)) for k, v in to_flat_dict(m.config).items() if not k.startswith("sweep.")
            ]
            params.append(Param("sweep.member", str(m.index)))
            for i in range(0, len(params), 100):
                self.client.log_batch(run.info.run_id, params=params[i : i + 100])

    def _trained_nothing(self) -> bool:
        return not any(self.runs_writer.logged.values())

    def continue_children(self, children: Mapping[int, str]) -> None:
        """Takes over the member runs of a killed or failed invocation of this sweep (RUNNING again),
        with the epochs each already holds, so the resumed sweep logs only what is new."""
        self.children = dict(children)
        for run_id in self.children.values():
            self.client.update_run(run_id, status="RUNNING")
            names = self.client.get_run(run_id).data.metrics  # every metric it holds (a NaN val_loss is not logged)
            self.runs_writer.logged[run_id] = {
                m.step for name in names for m in self.client.get_metric_history(run_id, name) if m.step > 0
            }

    def write_run_file(self, workdir: Path, status: str) -> None:
        """As :meth:`Session.write_run_file`, with the member runs (``children``: index -> run id)."""
        _write_run_file(
            workdir,
            {"run_id": self.run_id, "tracking_uri": self.uri, "status": status, "children": self.children},
        )

    def on_epoch(self, report: Any) -> None:
        """A :class:`mlp_jax.sweep.EpochReport`: each trained member's row to its child run."""
        for index, row in report.rows.items():
            self.runs_writer.write_scalars(self.children[index], int(row["epoch"]), row)

    def finish_sweep(
        self, result: Any, summary: Mapping[str, Any], best: SweepModel | None, ensemble: SweepModel | None
    ) -> dict[str, Any]:
        """Records every member, registers ``best`` and ``ensemble``, ends the runs; returns what to add to
        ``summary.json`` (run ids, registered versions, gate decisions).

        Raises:
          TrackingError: the results could not be recorded (the runs are marked FAILED and
            no half-registered version is left behind).
        """
        client = self.client
        out: dict[str, Any] = {}
        try:
            self.runs_writer.flush()
            for m in result.members:
                run_id = self.children[m.index]
                have = self.runs_writer.logged.get(run_id, set())
                ts = _now_ms()
                metrics = [
                    Metric(k, float(v), ts, int(h["epoch"]))
                    for h in m.history
                    if int(h["epoch"]) not in have
                    for k, v in h.items()
                    if k != "epoch" and v is not None and math.isfinite(float(v))
                ]
                final = {"best_epoch": m.best_epoch, "epochs_run": m.epochs_run}
                if math.isfinite(m.best_val_loss):
                    final["best_val_loss"] = m.best_val_loss
                held = client.get_run(run_id).data.metrics if self.continued else {}  # logged before a kill
                metrics += [Metric(k, float(v), ts, 0) for k, v in final.items() if held.get(k) != float(v)]
                for i in range(0, len(metrics), 1000):
                    client.log_batch(run_id, metrics=metrics[i : i + 1000], tags=[RunTag("mlp_jax.stopped", m.stopped)])
            client.log_dict(self.run_id, {"members": result.table()}, "sweep_table.json")
            out["mlflow_run_id"] = self.run_id
            out["mlflow_experiment_id"] = client.get_run(self.run_id).info.experiment_id
            out["mlflow_tracking_uri"] = self.uri
            out["registered_model"] = self.config.tracking.registered_model
            out["member_runs"] = {str(i): r for i, r in self.children.items()}
            parent_metrics: dict[str, float] = {}
            for key, model in (("best_member", best), ("ensemble", ensemble)):
                if model is None:
                    continue
                reg = self._register_sweep_model(model, key)
                out[key] = {
                    "members": list(model.members),
                    "checkpoint": model.checkpoint,
                    "run_id": model.run_id,
                    "val_loss": model.val_loss,
                    **model.test_metrics,
                    "model_version": reg.model_version,
                    "model_uri": reg.model_uri,
                    "champion": reg.champion,
                    "champion_gate": dataclasses.asdict(reg.gate),
                }
                parent_metrics.update(
                    {f"{key}_{k}": v for k, v in {"val_loss": model.val_loss, **model.test_metrics}.items()}
                )
            held = client.get_run(self.run_id).data.metrics if self.continued else {}
            finite = {
                k: float(v)
                for k, v in parent_metrics.items()
                if v is not None and math.isfinite(float(v)) and held.get(k) != float(v)
            }
            if finite:
                client.log_batch(self.run_id, metrics=[Metric(k, v, _now_ms(), 0) for k, v in finite.items()])
            client.log_dict(self.run_id, json.loads(json.dumps({**summary, **out}, default=str)), "summary.json")
            for run_id in self.children.values():
                client.set_terminated(run_id, "FINISHED")
            self._end("FINISHED")
            self._pending_version = None
            if self.workdir is not None:
                self.write_run_file(self.workdir, "FINISHED")
        except TrackingError:
            raise
        except Exception as e:
            raise TrackingError(
                f"recording MLflow sweep run {self.run_id} at {self.uri} failed: {type(e).__name__}: {e}"
            ) from e
        return out

    def _register_sweep_model(self, model: SweepModel, key: str) -> registry.Registration:
        from mlp_jax import pyfunc

        metric = registry.GATE_METRICS[self.dataset.task]
        name = self.config.tracking.registered_model
        existing = registry.already_registered(
            self.client, name, model.checkpoint, model.val_loss, metric, self._validation_set()
        )
        if existing is not None:  # a continued sweep killed after registering it
            return existing
        child = model.run_id != self.run_id
        if child:
            mlflow.start_run(run_id=model.run_id, nested=True)
        try:
            info = pyfunc.log_model(model.checkpoint, params={"sweep.members": ",".join(map(str, model.members))})
            metrics = {f"test_{k}" if not k.startswith("test_") else k: v for k, v in model.test_metrics.items()}
            mlflow.log_metrics(
                {k: float(v) for k, v in metrics.items() if math.isfinite(float(v))},
                run_id=model.run_id,
                model_id=info.model_id,
                dataset=self.mlflow_dataset,
            )
            reg = registry.register(
                self.client,
                info,
                run_id=model.run_id,
                name=name,
                experiment=f"{self.config.name} ({key.replace('_', ' ')} {list(model.members)})",
                val_loss=model.val_loss,
                metric=metric,
                dataset_digest=self.dataset.digest,
                dataset_source=str(self.dataset.source),
                test_accuracy=model.test_metrics.get("test_accuracy"),
                pending=self._set_pending,
                validation=self._validation_set(),
                checkpoint=model.checkpoint,
            )
            self._pending_version = None  # registered: this one stays even if a later step fails
        finally:
            if child:
                mlflow.end_run("FINISHED")
        return reg

    def abort(self, exc: BaseException | None = None) -> None:
        """Marks the parent and every unfinished child FAILED (KILLED on Ctrl-C); never raises."""
        try:
            self.runs_writer.flush()
        except Exception as e:
            print(f"mlflow: some member epoch metrics were not recorded: {e}", flush=True)
        status = "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"
        while (active := mlflow.active_run()) is not None and active.info.run_id != self.run_id:
            mlflow.end_run(status)  # a child left open by a failed registration
        for run_id in self.children.values():
            try:
                if self.client.get_run(run_id).info.status == "RUNNING":
                    self.client.set_terminated(run_id, status)
            except Exception as e:
                print(f"mlflow: could not end member run {run_id}: {e}", flush=True)
        super().abort(exc)


def _sweep_values_tag(member: Any) -> str:
    """A member run's ``mlp_jax.sweep_values`` tag (what a continued sweep's members must match)."""
    return json.dumps(member.values, default=str)


def _sweep_has_checkpoint(workdir: Path) -> bool:
    """A training checkpoint of some group of a sweep in ``workdir`` (``group-<g>/<epoch>``)."""
    return any(_has_steps(group) for group in workdir.glob("group-*"))


def _continuable_sweep(
    client: MlflowClient, workdir: Path, uri: str, experiment_id: str, members: list[Any]
) -> tuple[_Previous, dict[int, str]]:
    """The run before this sweep in ``workdir`` (:func:`_previous_run`) and, when it is continued,
    its member runs (index -> run id).

    A sweep killed or failed after its first checkpoint is continued: the same parent and
    member runs (recorded in ``workdir/mlflow_run.json``), when the store and experiment are
    the same, every run is still there and active, and the members are the same ones (index
    and swept values); otherwise the new runs follow it (tag ``mlp_jax.continues_run``), as a
    finished sweep's rerun does.
    """
    prev = _previous_run(client, workdir, uri, experiment_id, _sweep_has_checkpoint)
    parent = prev.continue_id
    if prev.file is None or parent is None:
        return prev, {}
    follow = dataclasses.replace(prev, continue_id=None, follows=parent)
    raw = prev.file.get("children")
    try:
        children = {int(k): str(v) for k, v in raw.items()} if isinstance(raw, dict) else {}
        runs = {i: client.get_run(r) for i, r in children.items()}
    except (MlflowException, ValueError, AttributeError):
        return follow, {}
    values = {m.index: _sweep_values_tag(m) for m in members}
    if sorted(runs) != sorted(values) or any(
        r.info.lifecycle_stage != "active"
        or r.data.tags.get("mlflow.parentRunId") != parent
        or r.data.tags.get("mlp_jax.sweep_values") != values[i]
        for i, r in runs.items()
    ):
        return follow, {}
    return prev, children


def start_sweep(config: Config, dataset: Any, members: list[Any]) -> SweepSession:
    """Opens a sweep's parent run and its member runs before training.

    A sweep killed (even by ``kill -9``) or failed after its first checkpoint continues its
    parent and member runs on rerun: they are RUNNING again, epochs they already hold are
    not logged twice, and :meth:`SweepSession.finish_sweep` ends them. Anything else (a
    first run, a finished sweep's rerun, another store, other members) opens a new parent
    and new member runs; :meth:`SweepSession.finish_sweep` logs the epochs the checkpoint
    already held, so every child ends with its full history.

    Raises:
      TrackingError: the store is unreachable, locked or not writable, or the registered
        model name is refused; nothing has been trained yet.
    """
    cfg = config.tracking
    uri = _usable_store(config)
    workdir = Path(config.resolved_workdir).resolve()
    session = None
    try:
        client, experiment = _open_experiment(config, uri)
        prev, children = _continuable_sweep(client, workdir, uri, experiment.experiment_id, members)
        continue_id = prev.continue_id
        run_id = _start_run(config, experiment.experiment_id, continue_id)
        session = SweepSession(config, dataset, uri, client, run_id, continued=bool(continue_id))
        session.keep_run_file(workdir)
        session.record_start(prev.follows)
        client.set_tag(session.run_id, "mlp_jax.sweep_members", str(len(members)))
        if continue_id:
            session.continue_children(children)
        else:
            session.start_children(members, experiment.experiment_id)
        session.write_run_file(workdir, "RUNNING")
        _end_stranded(client, prev.stranded, run_id)
    except TrackingError:
        if session is not None:
            session.abort(None)
        raise
    except Exception as e:
        if session is not None:
            session.abort(e)
        first_line = (str(e).strip().splitlines() or [""])[0]
        raise TrackingError(
            f"MLflow store {uri} is not usable ({type(e).__name__}: {first_line}); nothing was trained. "
            "Fix the store or run with tracking.enabled=false"
        ) from e
    browse = f" (browse: mlflow ui --backend-store-uri {uri})" if uri.startswith("sqlite:") else ""
    how = "continuing sweep run" if session.continued else "sweep run"
    print(
        f"mlflow: {how} {session.run_id} with {len(members)} member runs in experiment {cfg.experiment!r} at {uri}{browse}",
        flush=True,
    )
    return session
