"""Spooled delivery: what the RabbitMQ and Kafka alert sinks share.

A :class:`SpooledWriter` never blocks detection while its destination is down:

* ``write`` appends the batch to a per-worker on-disk :class:`~sinks.spool.Spool`
  (fsynced) and returns. Only a full spool (``spool_max_bytes``) makes it
  wait: backpressure, never a drop.
* One sender thread per writer reads the spool in order, hands each batch to
  the subclass's ``_deliver`` and acknowledges spool records only once the
  destination has confirmed them (and every record before them). A failed
  delivery is logged, counted in ``sentinel_sink_errors_total{sink=...}`` and
  retried after a backoff (0.5 s doubling to 10 s) from the first
  unconfirmed record, so the spool's order is kept; a record whose
  confirmation was lost may arrive twice (at least once).
* ``sentinel_alerts_published_total`` and the detection latency are counted
  when a record is acknowledged (``async_delivery``);
  ``sentinel_spool_pending{sink}`` counts what waits.
* ``flush(timeout)`` waits until everything written is confirmed.
  ``close()`` drains for at most ``drain_timeout`` seconds, then leaves what
  is left in the spool and logs how much: the next writer on the same
  directory delivers it first. A process killed outright loses nothing
  either: unacknowledged records are delivered again on the next start.
* Spools of workers that no longer exist (a former run with more workers,
  see :func:`worker_spool_dirs`) are adopted and delivered before the
  writer's own spool, then removed.

Errors that no retry can fix stop the sender (the subclass's ``_fatal_error``
names them); the next ``write``/``flush`` raises them (the batch is spooled
first, so nothing is lost).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import threading
import time
from typing import List, Optional, Sequence, Tuple, Type

from sentinel.metrics import get_metrics
from sinks.base import Alert, Writer
from sinks.spool import Spool

_BACKOFF_START_S = 0.5
_BACKOFF_MAX_S = 10.0
_READ_BATCH = 256
_IDLE_POLL_S = 0.5

_WORKER_DIR = re.compile(r"^worker-(\d+)$")


def worker_spool_dirs(base: str, worker_index: int, worker_count: int) -> Tuple[str, List[str]]:
    """``(own, orphans)``: this worker's spool directory ``<base>/worker-<index>``, and
    spools left by workers that no longer exist (a run with more workers before),
    which this worker adopts (``j % worker_count == worker_index``)."""
    own = os.path.join(base, "worker-%d" % worker_index)
    orphans = []
    try:
        entries = os.listdir(base)
    except OSError:
        entries = []
    for entry in entries:
        m = _WORKER_DIR.match(entry)
        if m:
            j = int(m.group(1))
            if j >= worker_count and j % worker_count == worker_index:
                orphans.append((j, os.path.join(base, entry)))
    return own, [path for _, path in sorted(orphans)]


class Progress:
    """What the destination has confirmed of one batch, in spool order."""

    __slots__ = ("seq", "done", "delivered")

    def __init__(self) -> None:
        self.seq: Optional[int] = None  # last spool seq confirmed (or skipped)
        self.done = 0  # records confirmed or skipped
        self.delivered: List[Optional[float]] = []  # ingested_at of each confirmed alert

    def confirm(self, seq: int, ingested_at: Optional[float]) -> None:
        self.seq, self.done = seq, self.done + 1
        self.delivered.append(ingested_at)

    def skip(self, seq: int) -> None:
        """A record that can never be delivered (undecodable): acknowledged, not counted as published."""
        self.seq, self.done = seq, self.done + 1


class SpooledWriter(Writer):
    """A :class:`~sinks.base.Writer` that spools and delivers from a sender thread.

    Subclasses set ``kind`` and ``error_class``, list the exceptions worth a
    retry in ``retry_on`` and implement ``_record`` (alert -> spool record)
    and ``_deliver`` (send a batch, confirm in order on the ``Progress``).
    """

    async_delivery = True
    error_class: Type[Exception] = RuntimeError
    retry_on: Tuple[Type[BaseException], ...] = (OSError,)
    # How long one delivery step may outlast the drain deadline (a connect, a publish).
    step_timeout = 5.0

    def __init__(self, spool_dir: str, spool_max_bytes: int, drain_timeout: float,
                 adopt_spools: Sequence[str] = ()) -> None:
        self.spool_dir = os.path.abspath(spool_dir)
        self.drain_timeout = float(drain_timeout)
        self._log = logging.getLogger(type(self).__module__)
        m = get_metrics()
        self._errors = m.sink_errors.labels(sink=self.kind)
        self._published = m.alerts_published.labels(sink=self.kind)
        self._latency = m.detection_latency
        self._spooled = m.spool_pending.labels(sink=self.kind)
        self._fatal: Optional[BaseException] = None
        self._last_error: Optional[str] = None
        self._closed = False
        self._stop = threading.Event()
        self._drain_deadline = float("inf")
        self._counted = 0

        self._spool = Spool(self.spool_dir, spool_max_bytes, name=self.kind)
        self._orphans: List[Spool] = []
        try:
            for path in adopt_spools:
                if os.path.abspath(path) == self.spool_dir or not os.path.isdir(path):
                    continue
                orphan = Spool(path, spool_max_bytes, name=self.kind)
                self._log.info("%s: adopting spool %s of a former worker (%d alerts pending)",
                               self.kind, path, orphan.pending)
                self._orphans.append(orphan)
            counted = sum(s.pending for s in [self._spool] + self._orphans)
            self._spooled.inc(counted)
            self._counted = counted
            self._open()
        except BaseException:
            self._disconnect()
            self._spooled.dec(self._counted)
            for s in [self._spool] + self._orphans:
                s.close()
            raise
        self._thread = threading.Thread(target=self._run, name="%s-sender[%s]" % (self.kind, os.path.basename(
            self.spool_dir)), daemon=True)
        self._thread.start()

    # -- what a destination provides --------------------------------------------

    def _record(self, alert: Alert, payload: bytes) -> bytes:  # pragma: no cover - interface
        raise NotImplementedError

    def _deliver(self, batch: List[Tuple[int, bytes]], progress: Progress) -> None:  # pragma: no cover
        """Send ``batch`` in order; ``progress.confirm`` each record once confirmed.

        Stop early (return) when :meth:`_past_drain_deadline`; raise one of
        ``retry_on`` on failure (after confirming what was confirmed).
        """
        raise NotImplementedError

    def _open(self) -> None:
        """Called once at start, before the sender runs: e.g. connect to show a bad configuration now."""

    def _disconnect(self) -> None:
        """Release the connection (the sender is gone, or the start failed)."""

    def _idle(self) -> None:
        """Nothing to send for a while."""

    def _fatal_error(self, exc: BaseException) -> Optional[BaseException]:
        """The error that stops the sender, if ``exc`` is one no retry can fix."""
        return None

    def _failure(self, exc: BaseException, backoff: float) -> str:
        """What to log about a failed delivery (which is retried in ``backoff`` seconds)."""
        return "delivery to %s failed (%s); %d alerts spooled, retrying in %.1fs" % (
            self._where(), exc, self.pending, backoff)

    def _where(self) -> str:
        return self.kind

    # -- the flow's side ----------------------------------------------------------

    @property
    def pending(self) -> int:
        """Alerts written but not yet confirmed by the destination."""
        return self._spool.pending + sum(s.pending for s in self._orphans)

    def write(self, alerts: List[Alert], payloads: List[bytes]) -> None:
        if not alerts:
            return
        if self._closed:
            raise self.error_class("%s: write after close" % self.kind)
        records = [self._record(Alert.of(a), p) for a, p in zip(alerts, payloads)]
        self._spool.put(records)  # durable once this returns; blocks only when the spool is full
        self._spooled.inc(len(records))
        self._counted += len(records)
        self._raise_fatal()

    def _raise_fatal(self) -> None:
        if self._fatal is not None:
            raise self.error_class(
                "%s: delivery stopped: %s (%d alerts kept in the spool %s for the next start)"
                % (self.kind, self._fatal, self.pending, self.spool_dir)
            ) from self._fatal

    def _note_error(self, text: str) -> None:
        self._last_error = text
        self._log.warning("%s: %s", self.kind, text)

    def flush(self, timeout: Optional[float] = None) -> None:
        """Wait until every alert written so far is confirmed by the destination.

        Raises ``error_class`` (naming the last error) if that takes longer
        than ``timeout`` seconds; nothing is dropped then: the alerts stay
        spooled and the sender goes on retrying.
        """
        start = time.monotonic()
        deadline = None if timeout is None else start + timeout
        while True:
            self._raise_fatal()
            if not self._orphans and self._spool.pending == 0:
                return
            if not self._thread.is_alive():
                raise self.error_class("%s: sender stopped with %d alerts pending" % (self.kind, self.pending))
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise self.error_class(
                    "%s: %d alerts still not confirmed by %s after %.1fs; last error: %s"
                    % (self.kind, self.pending, self._where(), time.monotonic() - start, self._last_error or "none")
                )
            if self._orphans:
                time.sleep(0.05 if remaining is None else min(0.05, remaining))
            else:
                self._spool.wait_empty(0.2 if remaining is None else min(0.2, remaining))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        start = time.monotonic()
        self._drain_deadline = start + self.drain_timeout
        self._stop.set()
        for s in [self._spool] + self._orphans:
            s.wake()
        # A delivery step in progress can outlast the deadline by its own timeout.
        self._thread.join(self.drain_timeout + self.step_timeout + 5.0)
        if self._thread.is_alive():
            self._log.error("%s: sender still busy %.1fs after close; %d alerts stay in the spool %s",
                            self.kind, time.monotonic() - start, self.pending, self.spool_dir)
            return
        left = self.pending
        if left:
            self._log.warning(
                "%s: %d alerts not confirmed within drain_timeout=%.1fs (last error: %s); they stay in the "
                "spool %s and are delivered first on the next start",
                self.kind, left, self.drain_timeout, self._last_error or "none", self.spool_dir,
            )
        elif self._counted:
            self._log.info("%s: spool %s drained in %.1fs", self.kind, self.spool_dir, time.monotonic() - start)
        self._spooled.dec(left)
        for s in [self._spool] + self._orphans:
            s.close()

    # -- the sender thread ----------------------------------------------------------

    def _past_drain_deadline(self) -> bool:
        return self._stop.is_set() and time.monotonic() >= self._drain_deadline

    def _draining_done(self) -> bool:
        """Stop requested and either nothing left or the drain deadline passed."""
        if not self._stop.is_set():
            return False
        return self.pending == 0 or time.monotonic() >= self._drain_deadline

    def _sleep(self, seconds: float) -> None:
        if self._stop.is_set():
            seconds = min(seconds, max(0.0, self._drain_deadline - time.monotonic()))
            time.sleep(seconds)
        else:
            self._stop.wait(seconds)

    def _current_spool(self) -> Spool:
        while self._orphans:
            orphan = self._orphans[0]
            if orphan.pending:
                return orphan
            self._orphans.pop(0)
            path = orphan.directory
            orphan.close()
            shutil.rmtree(path, ignore_errors=True)
            self._log.info("%s: adopted spool %s delivered and removed", self.kind, path)
        return self._spool

    def _run(self) -> None:
        backoff = _BACKOFF_START_S
        failing_since: Optional[float] = None
        try:
            while not self._draining_done():
                spool = self._current_spool()
                batch = spool.read(_READ_BATCH, timeout=0.05 if self._stop.is_set() else _IDLE_POLL_S)
                if not batch:
                    self._idle()
                    continue
                progress = Progress()
                try:
                    self._deliver(batch, progress)
                except self.retry_on as exc:
                    self._ack(spool, progress)
                    spool.rewind()
                    fatal = self._fatal_error(exc)
                    if fatal is not None:
                        self._fatal = fatal
                        self._last_error = str(fatal)
                        self._log.error("%s; sender stopped, %d alerts kept in the spool %s",
                                        fatal, self.pending, self.spool_dir)
                        return
                    self._errors.inc()
                    if failing_since is None:
                        failing_since = time.monotonic()
                    self._note_error(self._failure(exc, backoff))
                    self._sleep(backoff)
                    backoff = min(backoff * 2, _BACKOFF_MAX_S)
                    continue
                self._ack(spool, progress)
                if progress.done < len(batch):
                    spool.rewind()  # stopped mid-batch at the drain deadline
                if failing_since is not None:
                    self._log.info("%s: delivering again after %.1fs of failures (%d alerts still spooled)",
                                   self.kind, time.monotonic() - failing_since, self.pending)
                    failing_since = None
                    self._last_error = None
                backoff = _BACKOFF_START_S
        except BaseException as exc:  # pragma: no cover - a bug: make it visible, keep the spool
            self._fatal = exc
            self._log.exception("%s: sender crashed; %d alerts kept in the spool %s",
                                self.kind, self.pending, self.spool_dir)
        finally:
            self._disconnect()

    def _ack(self, spool: Spool, progress: Progress) -> None:
        if progress.seq is None:
            return
        spool.ack(progress.seq)
        self._spooled.dec(progress.done)
        now = time.time()
        self._published.inc(len(progress.delivered))
        for ingested in progress.delivered:
            if ingested is not None:
                self._latency.observe(max(0.0, now - ingested))
