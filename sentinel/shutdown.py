"""Graceful stop on SIGINT / SIGTERM.

The first signal asks every source to end its input: the flow then runs to
completion as at end of file (open windows are flushed, sinks flush and
close, Kafka offsets are committed). With recovery on, open windows are not
flushed but kept in the last snapshot, and the next run goes on with them. A
second signal stops at once. A signal that comes before the dataflow runs
(a process of a cluster still waiting for the others) stops at once too.

Signals are taken from a wakeup pipe by a thread of their own: while Bytewax
waits for the other processes of a cluster, the main thread is inside Rust
and would run no Python signal handler.
"""

from __future__ import annotations

import logging
import os
import signal
import threading

log = logging.getLogger(__name__)

STOP = threading.Event()

# With recovery on, a stop keeps open windows in the snapshot for the next run
# instead of flushing them (flushed, the rest of those windows would arrive late).
_keep_windows = False


def requested() -> bool:
    return STOP.is_set()


def keep_windows_on_stop(on: bool = True) -> None:
    global _keep_windows
    _keep_windows = on


def flush_on_eof() -> bool:
    """Whether end of input should flush open windows: yes, unless this is a stop with recovery on."""
    return not (_keep_windows and STOP.is_set())


_started = threading.Event()
_installed = False


def mark_started() -> None:
    """The dataflow runs (a worker built its outputs): a signal from now on stops it gracefully."""
    _started.set()


def _on_signal(signum: int) -> None:
    name = signal.Signals(signum).name
    if STOP.is_set():
        log.warning("second %s: stopping now", name)
        os._exit(130)
    if not _started.is_set():
        log.warning("%s while waiting for the cluster's other processes: stopping", name)
        os._exit(128 + signum)
    log.info("%s: finishing open windows and flushing sinks (send again to stop at once)", name)
    STOP.set()


def _watch(fd: int) -> None:
    while True:
        try:
            data = os.read(fd, 64)
        except InterruptedError:
            continue
        if not data:
            return
        for signum in data:
            if signum in (signal.SIGINT, signal.SIGTERM):
                _on_signal(signum)


def install() -> None:
    """Handle SIGINT and SIGTERM (from the main thread, once per process)."""
    global _installed
    if _installed:
        return
    r, w = os.pipe()
    os.set_blocking(w, False)
    signal.set_wakeup_fd(w, warn_on_full_buffer=False)
    # The Python-level handlers only keep the default actions away; the watcher thread acts.
    signal.signal(signal.SIGINT, lambda signum, frame: None)
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    threading.Thread(target=_watch, args=(r,), name="sentinel-signals", daemon=True).start()
    _installed = True
