"""Graceful stop on SIGINT / SIGTERM.

The first signal asks every source to end its input: the flow then runs to
completion as at end of file (open windows are flushed, sinks flush and
close, Kafka offsets are committed). A second signal stops at once.
"""

from __future__ import annotations

import logging
import os
import signal
import threading

log = logging.getLogger(__name__)

STOP = threading.Event()


def requested() -> bool:
    return STOP.is_set()


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
