"""Graceful stop on SIGINT / SIGTERM.

The first signal asks every source to end its input: the flow then runs to
completion as at end of file (open windows are flushed, sinks flush and
close, Kafka offsets are committed). With recovery on, open windows are not
flushed but kept in the last snapshot, and the next run goes on with them. A
second signal stops at once.
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


def install() -> None:
    def handler(signum, frame):
        if STOP.is_set():
            log.warning("second %s: stopping now", signal.Signals(signum).name)
            os._exit(130)
        log.info("%s: finishing open windows and flushing sinks (send again to stop at once)",
                 signal.Signals(signum).name)
        STOP.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
