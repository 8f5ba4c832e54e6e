"""Ctrl-C while training: stop at the end of the epoch, after its checkpoint, instead of mid-save.

A KeyboardInterrupt raised wherever the main thread happens to be can land inside Orbax's
checkpoint save, which coordinates background threads: measured here, 2 of 9 interrupts
timed a few milliseconds after a checkpoint began hung the process for good, and others
printed "Event loop is closed" tracebacks from Orbax's threads. :class:`EpochBoundary`
turns the first Ctrl-C into a request the training loop honours at the end of the epoch,
after saving that epoch's checkpoint (so nothing trained is lost and the rerun resumes
there); a second Ctrl-C raises at once, as before. It only acts in the main thread and when
SIGINT has Python's default handler (a notebook's or a caller's own handler is left alone);
a multi-process run does not install it (one process saving a checkpoint alone would wait
on the others' part of the collective save).
"""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType
from typing import Any


class EpochBoundary:
    """``install`` it around an epoch loop: ``requested`` after a first Ctrl-C, :meth:`check` raises then."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def install(self) -> EpochBoundary:
        """Takes over SIGINT (main thread, default handler only); :meth:`restore` gives it back."""
        if threading.current_thread() is threading.main_thread() and (
            signal.getsignal(signal.SIGINT) is signal.default_int_handler
        ):
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def restore(self) -> None:
        """Puts the previous SIGINT handler back (idempotent)."""
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:  # a second Ctrl-C: stop now
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None
            raise KeyboardInterrupt
        self.requested = True
        print(
            "\nCtrl-C: stopping after this epoch and its checkpoint (Ctrl-C again to stop at once)",
            file=sys.stderr,
            flush=True,
        )

    def check(self) -> None:
        """Raises KeyboardInterrupt when a Ctrl-C asked to stop (call after the epoch's checkpoint).

        Raises:
          KeyboardInterrupt: a stop was requested.
        """
        if self.requested:
            raise KeyboardInterrupt
