"""The metric-writer interface the training loop talks to (CLU's idea, none of its deps).

Back ends: :class:`NullWriter`, :class:`LogWriter` (here), and the MLflow writer in
``mlp_jax.tracking`` (imported only when tracking is on, so the core never imports mlflow).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol, TextIO


class MetricWriter(Protocol):
    """What the fit loop and the runner may call; every method is cheap or batched."""

    def write_hparams(self, params: Mapping[str, Any]) -> None: ...

    def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        """All scalars of one step (an epoch) in one call."""

    def write_artifact(self, path: str | Path, folder: str | None = None) -> None: ...

    def close(self) -> None: ...


class NullWriter:
    """Writes nothing."""

    def write_hparams(self, params: Mapping[str, Any]) -> None:
        pass

    def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        pass

    def write_artifact(self, path: str | Path, folder: str | None = None) -> None:
        pass

    def close(self) -> None:
        pass


class LogWriter(NullWriter):
    """Prints scalars as one line per step (for runs without tracking or a progress bar)."""

    def __init__(self, stream: TextIO = sys.stderr):
        self.stream = stream

    def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        body = " ".join(f"{k}={v:.4g}" for k, v in scalars.items())
        print(f"[{step}] {body}", file=self.stream, flush=True)


class MultiWriter(NullWriter):
    """Fans every call out to several writers."""

    def __init__(self, *writers: MetricWriter):
        self.writers = writers

    def write_hparams(self, params: Mapping[str, Any]) -> None:
        for w in self.writers:
            w.write_hparams(params)

    def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        for w in self.writers:
            w.write_scalars(step, scalars)

    def write_artifact(self, path: str | Path, folder: str | None = None) -> None:
        for w in self.writers:
            w.write_artifact(path, folder)

    def close(self) -> None:
        for w in self.writers:
            w.close()
