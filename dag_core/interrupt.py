"""Stopping a long run promptly: the threads that run its work, and what it leaves behind.

A signal handler runs in the main thread only, so work running in another thread (a Prefect task
on a thread-pool task runner, rendering one shard) would finish its current item — and the next
queued ones — before a Ctrl-C or SIGTERM could stop the process. Such work runs inside
:func:`work_thread`; :func:`stop_work` (called on a signal) raises :class:`KeyboardInterrupt` in
each of those threads at its next Python instruction (``PyThreadState_SetAsyncExc``), so a shard
stops within one sampler step and, being written atomically, leaves nothing half-written; work
that would start afterwards is refused the same way. Threads outside such a block are never
touched. :func:`on_stop` registers what else must happen at once (the command line arms its
deadline).

:func:`progress_note` tells the one-line message of a stopped run what was finished (e.g. ``5/16
shards written``); a long stage sets it with :func:`reporting_progress`.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

_LOCK = threading.Lock()
_WORK_THREADS: set[int] = set()
_PROGRESS: list[Callable[[], str | None]] = []
_STOPPED: list[str | None] = []  # what the last block stopped by an exception said at its end
_STOPPING = threading.Event()
_ON_STOP: list[Callable[[], object]] = []


@contextmanager
def work_thread() -> Iterator[None]:
    """Mark the current thread as running interruptible work for the duration of the block
    (the main thread needs no mark: the signal handler raises there itself)."""
    ident = threading.get_ident()
    if _STOPPING.is_set():
        raise KeyboardInterrupt("the run is stopping")
    if threading.current_thread() is threading.main_thread():
        yield
        return
    with _LOCK:
        _WORK_THREADS.add(ident)
    try:
        yield
    finally:
        with _LOCK:
            _WORK_THREADS.discard(ident)


def stop_work() -> int:
    """Stop the run's work now: raise KeyboardInterrupt in every thread inside
    :func:`work_thread`, refuse work that would start later, and call the :func:`on_stop`
    callbacks (the first time only). Returns how many threads were interrupted."""
    first = not _STOPPING.is_set()
    _STOPPING.set()
    count = 0
    with _LOCK:
        for ident in list(_WORK_THREADS):
            count += ctypes.pythonapi.PyThreadState_SetAsyncExc(
                ctypes.c_ulong(ident), ctypes.py_object(KeyboardInterrupt)
            )
            _WORK_THREADS.discard(ident)  # once: a second signal must not hit it again
    if first:
        for callback in list(_ON_STOP):
            callback()
    return count


@contextmanager
def stop_work_on_interrupt() -> Iterator[None]:
    """Around the main thread's wait for work fanned out to other threads: a KeyboardInterrupt or
    termination signal (not an ordinary exception) ending the block calls :func:`stop_work`, so
    that work stops too and queued work refuses to start, then propagates."""
    try:
        yield
    except Exception:
        raise
    except BaseException:  # KeyboardInterrupt, Prefect's TerminationSignal
        stop_work()
        raise


def stopping() -> bool:
    """Whether :func:`stop_work` was called (and :func:`resume_work` not since)."""
    return _STOPPING.is_set()


def resume_work() -> None:
    """Accept work again (a new command in the same process)."""
    _STOPPING.clear()


def on_stop(callback: Callable[[], object]) -> None:
    """Call ``callback`` (once) when :func:`stop_work` is first called."""
    if callback not in _ON_STOP:
        _ON_STOP.append(callback)


def _ask(describe: Callable[[], str | None]) -> str | None:
    try:
        return describe()
    except Exception:  # a stopped run's message must not fail on a half-gone folder
        return None


@contextmanager
def reporting_progress(describe: Callable[[], str | None]) -> Iterator[None]:
    """While the block runs, :func:`progress_note` asks ``describe`` what is finished; when an
    exception (an interrupt) ends the block, what it says then is kept for the error line."""
    _STOPPED.clear()
    _PROGRESS.append(describe)
    try:
        yield
    except BaseException:
        _STOPPED[:] = [_ask(describe)]
        raise
    finally:
        _PROGRESS.remove(describe)


def progress_note() -> str | None:
    """What the innermost running :func:`reporting_progress` block says is finished, else what
    the last block stopped by an exception said (None when there is neither, or it cannot
    tell)."""
    if _PROGRESS:
        return _ask(_PROGRESS[-1])
    return _STOPPED[0] if _STOPPED else None
