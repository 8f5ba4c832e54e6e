"""Test metrics and reports (classification, regression), and plots (loss curve, confusion matrix,
predicted vs actual, residuals).

Reference metrics come from scikit-learn; plots use matplotlib's non-interactive Agg
backend, imported only when a plot is drawn.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import nnx

from mlp_jax.model import apply, probabilities_fn


def batched_probabilities(
    graphdef: nnx.GraphDef, params: nnx.State, x: np.ndarray, batch_size: int = 8192
) -> np.ndarray:
    """Class probabilities ``[rows, n_classes]`` for preprocessed rows, in fixed-size padded batches (one compile)."""
    return _in_batches(jax.jit(probabilities_fn(graphdef)), params, x, batch_size)


def _in_batches(f: Any, params: nnx.State, x: np.ndarray, batch_size: int) -> np.ndarray:
    """``f(params, chunk)`` over ``x`` in equal padded chunks (one shape, one compile), concatenated."""
    n = len(x)
    b = min(batch_size, max(n, 1))
    out = []
    for i in range(0, n, b):
        chunk = x[i : i + b]
        pad = b - len(chunk)
        if pad:
            chunk = np.concatenate([chunk, np.zeros((pad, x.shape[1]), x.dtype)])
        out.append(np.asarray(f(params, chunk))[: b - pad])
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def classification_report(y_true: np.ndarray, probs: np.ndarray, classes: Sequence[Any]) -> dict[str, Any]:
    """Per-class precision/recall/F1/support, macro and weighted averages, accuracy, log loss,
    ROC AUC (binary: positive = classes[1]; multi-class: one-vs-rest macro) and the confusion matrix."""
    from sklearn import metrics

    labels = list(range(len(classes)))
    y_pred = probs.argmax(axis=1)
    names = [str(c) for c in classes]
    report = metrics.classification_report(
        y_true, y_pred, labels=labels, target_names=names, output_dict=True, zero_division=0
    )
    out: dict[str, Any] = {
        "accuracy": float(metrics.accuracy_score(y_true, y_pred)),
        "log_loss": float(metrics.log_loss(y_true, np.clip(probs, 1e-7, 1.0), labels=labels)),
        "per_class": {n: {k: float(v) for k, v in report[n].items()} for n in names},
        "macro_avg": {k: float(v) for k, v in report["macro avg"].items()},
        "weighted_avg": {k: float(v) for k, v in report["weighted avg"].items()},
        "confusion_matrix": metrics.confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        "classes": list(classes),
    }
    present = np.unique(y_true)
    if len(classes) == 2 and len(present) == 2:
        out["roc_auc"] = float(metrics.roc_auc_score(y_true, probs[:, 1]))
    elif len(present) == len(classes):
        out["roc_auc_ovr_macro"] = float(metrics.roc_auc_score(y_true, probs, multi_class="ovr", labels=labels))
    out["text"] = metrics.classification_report(
        y_true, y_pred, labels=labels, target_names=names, digits=4, zero_division=0
    )
    return out


def batched_outputs(graphdef: nnx.GraphDef, params: nnx.State, x: np.ndarray, batch_size: int = 8192) -> np.ndarray:
    """The network's raw outputs ``[rows, n_outputs]`` (standardised regression targets), padded batches."""
    return _in_batches(jax.jit(lambda p, xb: apply(graphdef, p, xb)), params, x, batch_size)


def regression_report(y_true: np.ndarray, y_pred: np.ndarray, targets: Sequence[str]) -> dict[str, Any]:
    """RMSE, MAE and R² per target (original units) and their mean over targets.

    ``y_true`` / ``y_pred``: ``[rows, n_targets]``. Reference implementations from scikit-learn.
    """
    from sklearn import metrics

    per = {}
    for i, name in enumerate(targets):
        t, p = y_true[:, i], y_pred[:, i]
        per[name] = {
            "rmse": float(np.sqrt(metrics.mean_squared_error(t, p))),
            "mae": float(metrics.mean_absolute_error(t, p)),
            "r2": float(metrics.r2_score(t, p)),
        }
    out: dict[str, Any] = {k: float(np.mean([v[k] for v in per.values()])) for k in ("rmse", "mae", "r2")}
    out["per_target"] = per
    out["targets"] = list(targets)
    lines = [f"{'target':<24}{'RMSE':>14}{'MAE':>14}{'R2':>10}"]
    lines += [f"{n:<24}{v['rmse']:>14.6g}{v['mae']:>14.6g}{v['r2']:>10.4f}" for n, v in per.items()]
    out["text"] = "\n".join(lines)
    return out


def report_text(report: dict[str, Any]) -> str:
    if "per_target" in report:
        return report["text"].rstrip() + "\n"
    lines = [report["text"].rstrip(), "", f"log loss: {report['log_loss']:.5f}"]
    if "roc_auc" in report:
        lines.append(f"ROC AUC: {report['roc_auc']:.5f}")
    if "roc_auc_ovr_macro" in report:
        lines.append(f"ROC AUC (one-vs-rest, macro): {report['roc_auc_ovr_macro']:.5f}")
    return "\n".join(lines) + "\n"


def plot_predicted_vs_actual(y_true: np.ndarray, y_pred: np.ndarray, targets: Sequence[str], path: str | Path) -> Path:
    """Per target: predicted against actual (with the identity line), and residuals against predicted."""
    k = len(targets)
    fig = _figure(figsize=(10, 4 * k))
    axes = np.asarray(fig.subplots(k, 2)).reshape(k, 2)
    for i, name in enumerate(targets):
        t, p = y_true[:, i], y_pred[:, i]
        lo, hi = float(min(t.min(), p.min())), float(max(t.max(), p.max()))
        axes[i, 0].scatter(t, p, s=6, alpha=0.5)
        axes[i, 0].plot([lo, hi], [lo, hi], color="black", lw=1)
        axes[i, 0].set(xlabel=f"actual {name}", ylabel=f"predicted {name}", title="Predicted vs actual")
        axes[i, 1].scatter(p, t - p, s=6, alpha=0.5)
        axes[i, 1].axhline(0.0, color="black", lw=1)
        axes[i, 1].set(xlabel=f"predicted {name}", ylabel="residual (actual - predicted)", title="Residuals")
        for ax in axes[i]:
            ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def write_report(report: dict[str, Any], folder: str | Path) -> list[Path]:
    """``classification_report.json`` / ``.txt`` (or ``regression_report.*``) in ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stem = "regression_report" if "per_target" in report else "classification_report"
    j, t = folder / f"{stem}.json", folder / f"{stem}.txt"
    j.write_text(json.dumps({k: v for k, v in report.items() if k != "text"}, indent=2, default=str))
    t.write_text(report_text(report))
    return [j, t]


def _figure(**kwargs: Any):
    # A bare Figure draws with Agg and never touches pyplot's global backend (a notebook's inline one).
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def plot_loss_curve(history: Sequence[dict[str, float]], path: str | Path) -> Path:
    """Train/val loss and accuracy against epoch, side by side."""
    epochs = [h["epoch"] for h in history]
    fig = _figure(figsize=(10, 4))
    ax_l, ax_a = fig.subplots(1, 2)
    ax_l.plot(epochs, [h["train_loss"] for h in history], label="train")
    ax_l.plot(epochs, [h["val_loss"] for h in history], label="validation")
    second = "accuracy" if history and "val_accuracy" in history[0] else "rmse"
    ax_l.set(xlabel="epoch", ylabel="loss", title="Loss")
    ax_a.plot(epochs, [h[f"train_{second}"] for h in history], label="train")
    ax_a.plot(epochs, [h[f"val_{second}"] for h in history], label="validation")
    ylabel = "accuracy" if second == "accuracy" else "RMSE (standardised targets)"
    ax_a.set(xlabel="epoch", ylabel=ylabel, title=ylabel.split(" ")[0].capitalize())
    for ax in (ax_l, ax_a):
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def plot_confusion_matrix(matrix: Sequence[Sequence[int]], classes: Sequence[Any], path: str | Path) -> Path:
    """Counts and row-normalised (recall) confusion matrices, class labels on both axes."""
    counts = np.asarray(matrix, dtype=np.int64)
    norm = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    names = [str(c) for c in classes]
    k = len(names)
    fig = _figure(figsize=(5 + 1.2 * k, 2.5 + 0.6 * k))
    axes = fig.subplots(1, 2)
    for ax, data, title, fmt in ((axes[0], counts, "Counts", "d"), (axes[1], norm, "Normalised by true class", ".2f")):
        im = ax.imshow(data, cmap="Blues")
        ax.set(
            xticks=range(k),
            yticks=range(k),
            xticklabels=names,
            yticklabels=names,
            xlabel="predicted label",
            ylabel="true label",
            title=title,
        )
        threshold = data.max() / 2 if data.size else 0
        for i in range(k):
            for j in range(k):
                ax.text(
                    j,
                    i,
                    format(data[i, j], fmt),
                    ha="center",
                    va="center",
                    color="white" if data[i, j] > threshold else "black",
                )
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path
