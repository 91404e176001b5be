"""Slurm's time-limit signal (SIGUSR1) as a flag, watched from the job's first moments.

SIGUSR1's default action ends the process. ``pipeline.train`` calls ``watch_requeue_signal`` before anything
else (this module imports neither torch nor Lightning, so that costs nothing), so a signal that comes while
the job still starts up is kept until ``stop_signals.RequeueOnSignal`` acts on it at the first step boundary.
"""

from __future__ import annotations

import signal
import threading

REQUEUE_SIGNAL = signal.SIGUSR1
REQUEUE_REQUESTED = threading.Event()  # one per process, as the signal is


def watch_requeue_signal() -> None:
    """From now on SIGUSR1 only sets ``REQUEUE_REQUESTED`` (nothing else is safe in a signal handler)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(REQUEUE_SIGNAL, lambda signum, frame: REQUEUE_REQUESTED.set())
