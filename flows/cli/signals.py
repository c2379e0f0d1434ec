"""Ctrl-C and SIGTERM: stop the run within seconds, and a watchdog that ends it if it does not.

The handler raises KeyboardInterrupt in the main thread and stops every thread running
interruptible work (:mod:`dag_core.interrupt`: a shard on the thread-pool task runner); a
watchdog thread ends the process after :data:`STOP_GRACE` s whatever it is doing, and a second
signal ends it at once, each with the interrupted line and exit status 128 + the signal.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import dataclass
from typing import Any, NoReturn

from dag_core.interrupt import on_stop, resume_work, stop_work
from flows.cli.console import emit
from flows.cli.errors import interrupted_line

#: seconds a run has to stop by itself after Ctrl-C / SIGTERM before the process is ended
STOP_GRACE = 7.0


@dataclass
class _Stop:
    """The signal that is stopping the command, and the watchdog that will end it."""

    signum: int | None = None
    watchdog: threading.Thread | None = None


_STOP = _Stop()


def install() -> None:
    """Route Ctrl-C and SIGTERM to the stop handler (from the main thread) and arm the watchdog
    when work is stopped otherwise (Prefect's SIGTERM bridge); work may run unless stopping."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _on_signal)
        signal.signal(signal.SIGTERM, _on_signal)
    on_stop(arm_watchdog)
    if _STOP.signum is None:
        resume_work()


def exit_now(signum: int) -> NoReturn:
    """End the process at once with the interrupted line (the run's own Prefect server dies
    with it)."""
    emit(interrupted_line())
    os._exit(128 + signum)


def _watch() -> None:
    time.sleep(STOP_GRACE)
    exit_now(_STOP.signum or signal.SIGTERM)  # Prefect's SIGTERM bridge ran first


def arm_watchdog() -> None:
    """End the process :data:`STOP_GRACE` s from now if the run has not stopped by then."""
    if _STOP.watchdog is None:
        _STOP.watchdog = threading.Thread(target=_watch, name="dag-stop", daemon=True)
        _STOP.watchdog.start()


def _on_signal(signum: int, frame: Any) -> None:
    """Ctrl-C / SIGTERM: stop the main thread and the work threads now; end the process after
    :data:`STOP_GRACE` s if the run has not stopped by then (at once on a second signal).

    During a flow run Prefect handles SIGTERM first (its ``TerminationSignal``), reports the run
    crashed and sends SIGTERM again, which lands here."""
    if _STOP.signum is not None:
        exit_now(_STOP.signum)
    _STOP.signum = signum
    stop_work()
    arm_watchdog()
    raise KeyboardInterrupt(f"interrupted by {signal.Signals(signum).name}")


def signal_of(exc: BaseException) -> int | None:
    """The signal that stopped the run, if ``exc`` is how it arrived."""
    if isinstance(exc, KeyboardInterrupt):
        return _STOP.signum or signal.SIGINT
    if type(exc).__name__ == "TerminationSignal":  # Prefect's own SIGTERM bridge
        return int(getattr(exc, "signal", signal.SIGTERM))
    return None
