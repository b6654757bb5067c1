"""RabbitMQ alert sink (SPEC section 2): spooled on disk, published by a sender thread.

Topology, declared on every (re)connect when ``declare`` is true::

    exchange  sentinel.alerts            durable, topic
    queue     incidents.high-priority    durable, bound to alert.high.#, alert.critical.#
    queue     incidents.low-priority     durable, bound to alert.info.#, alert.low.#, alert.medium.#

The queue bindings can be replaced by ``bindings={queue: [severity, ...]}``
(the sink's ``routing`` key in a flow definition).

Every alert is published with routing key ``alert.<severity>.<type>``,
``mandatory`` (an unroutable alert comes back as an error instead of
vanishing), persistent, ``content_type`` ``application/json`` (also with the
CloudEvents envelope: the SPEC fixes the content type, the CloudEvents
attributes are in the body, structured mode), ``message_id`` = ``alert_id``,
``timestamp`` = the alert's ``detected_at`` (stable under redelivery), headers
``severity``, ``type``, ``service`` and ``status``, on a channel in
publisher-confirm mode.

Delivery never blocks detection during a broker outage:

* ``write`` appends the batch to a per-worker on-disk :class:`~sinks.spool.Spool`
  (fsynced) and returns. Only a full spool (``spool_max_bytes``) makes it
  wait: backpressure, never a drop.
* One sender thread per writer owns the AMQP connection. It reads the spool in
  order, publishes, and acknowledges spool records only once the broker has
  confirmed them. A lost connection, a closed channel, a nack or a returned
  (unroutable) message is logged, counted in
  ``sentinel_sink_errors_total{sink="rabbitmq"}`` and retried after a backoff
  (0.5 s doubling to 10 s), reconnecting first when the connection is gone.
  Retries restart from the first unconfirmed record, so the order of the
  spool (the emission order, hence the order of every fingerprint's alerts) is
  kept; a message whose confirm was lost may arrive twice (``message_id`` is
  stable, consumers drop the duplicate).
* ``flush(timeout)`` waits until everything written is confirmed.
  ``close()`` (flow end, SIGTERM/SIGINT) drains for at most ``drain_timeout``
  seconds, then leaves what is left in the spool and logs how much: the next
  writer on the same ``spool_dir`` delivers it first. A process killed
  outright loses nothing either: unacknowledged spool records are delivered
  again on the next start.

Errors that no retry can fix (bad credentials, a vhost the user may not use, a
declaration that conflicts with an existing exchange or queue) raise
:class:`RabbitMQDeliveryError` from the constructor when the broker is up at
start; found later by the sender, they stop it and are raised by the next
``write``/``flush`` (the batch is spooled first, so nothing is lost).

A ``BlockingConnection`` only answers heartbeats while it is in use, so the
sender services the connection (``process_data_events(0)``) whenever it is
idle, and reconnects when it finds it dead.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import struct
import threading
import time
from datetime import datetime
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple
from urllib.parse import parse_qs, quote, urlsplit

import orjson
import pika
import pika.exceptions as pex

from sentinel.metrics import get_metrics
from sinks.base import INGESTED_AT, Alert, Writer
from sinks.spool import DEFAULT_MAX_BYTES, Spool

log = logging.getLogger(__name__)

SEVERITIES = ("info", "low", "medium", "high", "critical")
HIGH_SEVERITIES = ("high", "critical")
LOW_SEVERITIES = ("info", "low", "medium")

_BACKOFF_START_S = 0.5
_BACKOFF_MAX_S = 10.0
_READ_BATCH = 256
_IDLE_POLL_S = 0.5

# Channel close codes that mean "misconfigured", not "try again later".
_FATAL_CHANNEL_CODES = {403, 406}  # ACCESS_REFUSED, PRECONDITION_FAILED

_META = struct.Struct("<I")
_WORKER_DIR = re.compile(r"^worker-(\d+)$")


class RabbitMQDeliveryError(RuntimeError):
    """Alerts could not be delivered to RabbitMQ, and retrying will not help (or took too long)."""


def routing_key(alert: Alert) -> str:
    return "alert.%s.%s" % (alert.get("severity") or "info", alert.get("type") or "unknown")


def default_bindings(high_queue: str = "incidents.high-priority",
                     low_queue: str = "incidents.low-priority") -> Dict[str, List[str]]:
    """The SPEC bindings: high/critical to one queue, the other severities to the other."""
    return {high_queue: list(HIGH_SEVERITIES), low_queue: list(LOW_SEVERITIES)}


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


# -- spool records -------------------------------------------------------------


def _timestamp(alert: Alert) -> int:
    value = alert.get("detected_at")
    if isinstance(value, str):
        try:
            return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp())
        except ValueError:
            pass
    return int(time.time())


def encode_record(alert: Alert, payload: bytes) -> bytes:
    """What the spool keeps for one alert: everything the publish needs."""
    headers: Dict[str, str] = {}
    for field in ("severity", "type", "service", "status"):
        value = alert.get(field)
        if value is not None:
            headers[field] = str(value)
    meta = orjson.dumps({
        "rk": routing_key(alert),
        "id": str(alert["alert_id"]),
        "ts": _timestamp(alert),
        "h": headers,
        "in": alert.get(INGESTED_AT),
    })
    return _META.pack(len(meta)) + meta + payload


def decode_record(record: bytes) -> Tuple[Dict[str, Any], bytes]:
    (n,) = _META.unpack_from(record, 0)
    start = _META.size
    return orjson.loads(record[start:start + n]), record[start + n:]


# -- the writer ------------------------------------------------------------------


class RabbitMQWriter(Writer):
    kind = "rabbitmq"
    # Published / latency metrics are counted by the sender, on confirm.
    async_delivery = True

    def __init__(
        self,
        url: str = "amqp://guest:guest@127.0.0.1:5672/%2F",
        exchange: str = "sentinel.alerts",
        high_queue: str = "incidents.high-priority",
        low_queue: str = "incidents.low-priority",
        declare: bool = True,
        heartbeat: int = 30,
        blocked_connection_timeout: float = 60.0,
        connection_name: str = "llm-sentinel",
        spool_dir: Optional[str] = None,
        spool_max_bytes: int = DEFAULT_MAX_BYTES,
        drain_timeout: float = 10.0,
        bindings: Optional[Mapping[str, Sequence[str]]] = None,
        adopt_spools: Sequence[str] = (),
    ) -> None:
        self.url = url
        self.exchange = exchange
        self.declare = declare
        self.drain_timeout = float(drain_timeout)
        self.bindings: Dict[str, List[str]] = (
            {q: list(sevs) for q, sevs in bindings.items()} if bindings else default_bindings(high_queue, low_queue)
        )
        self.spool_dir = os.path.abspath(spool_dir or os.path.join("sentinel-spool", exchange, "worker-0"))
        self._params = self._parameters(url, heartbeat, blocked_connection_timeout, connection_name)
        self._conn: Optional[pika.BlockingConnection] = None
        self._ch: Any = None
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

        self._spool = Spool(self.spool_dir, spool_max_bytes, name="rabbitmq")
        self._orphans: List[Spool] = []
        try:
            for path in adopt_spools:
                if os.path.abspath(path) == self.spool_dir or not os.path.isdir(path):
                    continue
                orphan = Spool(path, spool_max_bytes, name="rabbitmq")
                log.info("rabbitmq: adopting spool %s of a former worker (%d alerts pending)", path, orphan.pending)
                self._orphans.append(orphan)
            self._counted = sum(s.pending for s in [self._spool] + self._orphans)
            self._spooled.inc(self._counted)
            # Connect now so that a bad configuration shows at start-up; an
            # unreachable broker is only logged: the sender retries.
            try:
                self._connect()
            except pex.AMQPError as exc:
                self._raise_if_fatal(exc)
                self._note_error("cannot connect to %s yet (%s); alerts are spooled in %s until it answers"
                                 % (self._safe_url(), _describe(exc), self.spool_dir))
                self._drop_connection()
            except OSError as exc:
                self._note_error("cannot connect to %s yet (%s); alerts are spooled in %s until it answers"
                                 % (self._safe_url(), exc, self.spool_dir))
                self._drop_connection()
        except BaseException:
            self._drop_connection()
            self._spooled.dec(getattr(self, "_counted", 0))
            for s in [self._spool] + self._orphans:
                s.close()
            raise
        self._thread = threading.Thread(target=self._run, name="rabbitmq-sender[%s]" % os.path.basename(self.spool_dir),
                                        daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        """Alerts written but not yet confirmed by the broker."""
        return self._spool.pending + sum(s.pending for s in self._orphans)

    # -- connection ---------------------------------------------------------

    @staticmethod
    def _parameters(url: str, heartbeat: int, blocked_timeout: float, name: str) -> pika.URLParameters:
        params = pika.URLParameters(url)
        query = parse_qs(urlsplit(url).query)
        # Settings given in the URL win over the writer's defaults.
        if "heartbeat" not in query:
            params.heartbeat = heartbeat
        if "blocked_connection_timeout" not in query:
            params.blocked_connection_timeout = blocked_timeout
        if "connection_attempts" not in query:
            params.connection_attempts = 1  # the sender does the retrying, with backoff
        if "socket_timeout" not in query:
            params.socket_timeout = 5.0
        props = dict(params.client_properties or {})
        props.setdefault("connection_name", name)
        params.client_properties = props
        return params

    def _safe_url(self) -> str:
        p = self._params
        return "amqp://%s:%s/%s" % (p.host, p.port, quote(p.virtual_host, safe=""))

    def _connect(self) -> None:
        conn = pika.BlockingConnection(self._params)
        try:
            ch = conn.channel()
            if self.declare:
                ch.exchange_declare(self.exchange, exchange_type="topic", durable=True)
                for queue, severities in self.bindings.items():
                    ch.queue_declare(queue, durable=True)
                    for sev in severities:
                        ch.queue_bind(queue, self.exchange, routing_key="alert.%s.#" % sev)
            ch.confirm_delivery()
        except BaseException:
            try:
                conn.close()
            except Exception:
                pass
            raise
        self._conn, self._ch = conn, ch
        log.info("rabbitmq: connected to %s, exchange %r", self._safe_url(), self.exchange)

    def _drop_connection(self) -> None:
        conn, self._conn, self._ch = self._conn, None, None
        if conn is not None and conn.is_open:
            try:
                conn.close()
            except Exception:
                pass

    def _connected(self) -> bool:
        return (
            self._conn is not None
            and self._conn.is_open
            and self._ch is not None
            and self._ch.is_open
        )

    def _fatal_error(self, exc: BaseException) -> Optional[RabbitMQDeliveryError]:
        if isinstance(exc, (pex.ProbableAuthenticationError, pex.AuthenticationError, pex.ProbableAccessDeniedError)):
            return RabbitMQDeliveryError(
                "rabbitmq: %s refused the login (%s): check the user, password and vhost in the sink url"
                % (self._safe_url(), _describe(exc))
            )
        if isinstance(exc, pex.ChannelClosedByBroker) and exc.reply_code in _FATAL_CHANNEL_CODES:
            return RabbitMQDeliveryError(
                "rabbitmq: broker rejected the exchange/queue setup or publish (%s): an existing exchange or "
                "queue with these names has other settings, or the user lacks permissions; "
                "exchange=%r queues=%r"
                % (_describe(exc), self.exchange, sorted(self.bindings))
            )
        return None

    def _raise_if_fatal(self, exc: BaseException) -> None:
        err = self._fatal_error(exc)
        if err is not None:
            raise err from exc

    def _note_error(self, text: str) -> None:
        self._last_error = text
        log.warning("rabbitmq: %s", text)

    # -- the flow's side ----------------------------------------------------

    def write(self, alerts: List[Alert], payloads: List[bytes]) -> None:
        if not alerts:
            return
        if self._closed:
            raise RabbitMQDeliveryError("rabbitmq: write after close")
        records = [encode_record(a, p) for a, p in zip(alerts, payloads)]
        self._spool.put(records)  # durable once this returns; blocks only when the spool is full
        self._spooled.inc(len(records))
        self._counted += len(records)
        self._raise_fatal()

    def _raise_fatal(self) -> None:
        if self._fatal is not None:
            raise RabbitMQDeliveryError(
                "rabbitmq: delivery stopped: %s (%d alerts kept in the spool %s for the next start)"
                % (self._fatal, self.pending, self.spool_dir)
            ) from self._fatal

    def flush(self, timeout: Optional[float] = None) -> None:
        """Wait until every alert written so far is confirmed by the broker.

        Raises :class:`RabbitMQDeliveryError` (naming the last error) if that
        takes longer than ``timeout`` seconds; nothing is dropped then: the
        alerts stay spooled and the sender goes on retrying.
        """
        start = time.monotonic()
        deadline = None if timeout is None else start + timeout
        while True:
            self._raise_fatal()
            if not self._orphans and self._spool.pending == 0:
                return
            if not self._thread.is_alive():
                raise RabbitMQDeliveryError("rabbitmq: sender stopped with %d alerts pending" % self.pending)
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise RabbitMQDeliveryError(
                    "rabbitmq: %d alerts still not confirmed by %s (exchange %r) after %.1fs; last error: %s"
                    % (self.pending, self._safe_url(), self.exchange, time.monotonic() - start,
                       self._last_error or "none")
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
        # A connect or publish in progress can outlast the deadline by its own timeout.
        self._thread.join(self.drain_timeout + self._params.socket_timeout + 5.0)
        if self._thread.is_alive():
            log.error("rabbitmq: sender still busy %.1fs after close; %d alerts stay in the spool %s",
                      time.monotonic() - start, self.pending, self.spool_dir)
            return
        left = self.pending
        if left:
            log.warning(
                "rabbitmq: %d alerts not confirmed within drain_timeout=%.1fs (last error: %s); they stay in the "
                "spool %s and are delivered first on the next start",
                left, self.drain_timeout, self._last_error or "none", self.spool_dir,
            )
        elif self._counted:
            log.info("rabbitmq: spool %s drained in %.1fs", self.spool_dir, time.monotonic() - start)
        self._spooled.dec(left)
        for s in [self._spool] + self._orphans:
            s.close()

    # -- the sender thread ----------------------------------------------------

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
            log.info("rabbitmq: adopted spool %s delivered and removed", path)
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
                confirmed: Optional[int] = None  # last seq the broker confirmed
                done = 0
                key = "?"
                try:
                    if not self._connected():
                        self._drop_connection()
                        self._connect()
                    for seq, record in batch:
                        if self._stop.is_set() and time.monotonic() >= self._drain_deadline:
                            break
                        meta, body = decode_record(record)
                        key = meta["rk"]
                        self._publish(meta, body)
                        confirmed, done = seq, done + 1
                        self._observe(meta)
                except (pex.AMQPError, OSError) as exc:
                    self._ack(spool, confirmed, done)
                    spool.rewind()
                    fatal = self._fatal_error(exc)
                    if fatal is not None:
                        self._fatal = fatal
                        self._last_error = str(fatal)
                        log.error("%s; sender stopped, %d alerts kept in the spool %s",
                                  fatal, self.pending, self.spool_dir)
                        return
                    self._errors.inc()
                    if failing_since is None:
                        failing_since = time.monotonic()
                    if isinstance(exc, pex.UnroutableError):
                        self._note_error(
                            "UnroutableError: no queue bound to exchange %r takes routing key %r (%d alerts "
                            "pending); retrying in %.1fs" % (self.exchange, key, self.pending, backoff))
                    elif isinstance(exc, pex.NackError):
                        self._note_error("NackError: broker refused a message (%d alerts pending); retrying in %.1fs"
                                         % (self.pending, backoff))
                    else:
                        self._note_error("delivery to %s failed (%s); %d alerts spooled, reconnecting in %.1fs"
                                         % (self._safe_url(), _describe(exc), self.pending, backoff))
                        self._drop_connection()
                    self._sleep(backoff)
                    backoff = min(backoff * 2, _BACKOFF_MAX_S)
                    continue
                self._ack(spool, confirmed, done)
                if done < len(batch):
                    spool.rewind()  # stopped mid-batch at the drain deadline
                if failing_since is not None:
                    log.info("rabbitmq: delivering again after %.1fs of failures (%d alerts still spooled)",
                             time.monotonic() - failing_since, self.pending)
                    failing_since = None
                    self._last_error = None
                backoff = _BACKOFF_START_S
        except BaseException as exc:  # pragma: no cover - a bug: make it visible, keep the spool
            self._fatal = exc
            log.exception("rabbitmq: sender crashed; %d alerts kept in the spool %s", self.pending, self.spool_dir)
        finally:
            self._drop_connection()

    def _ack(self, spool: Spool, confirmed: Optional[int], done: int) -> None:
        if confirmed is not None:
            spool.ack(confirmed)
            self._spooled.dec(done)

    def _idle(self) -> None:
        """Nothing to send: answer heartbeats, notice a connection that died."""
        if self._conn is None:
            return
        try:
            if self._connected():
                self._conn.process_data_events(0)
            if not self._connected():
                self._drop_connection()
        except (pex.AMQPError, OSError) as exc:
            log.info("rabbitmq: idle connection lost (%s); reconnecting on the next alert", _describe(exc))
            self._drop_connection()

    def _publish(self, meta: Dict[str, Any], body: bytes) -> None:
        props = pika.BasicProperties(
            content_type="application/json",
            delivery_mode=pika.DeliveryMode.Persistent,
            message_id=meta["id"],
            timestamp=meta["ts"],
            app_id="llm-sentinel",
            headers=meta["h"],
        )
        # In confirm mode this blocks until the broker acks; raises
        # UnroutableError (returned, mandatory) or NackError.
        self._ch.basic_publish(self.exchange, meta["rk"], body, properties=props, mandatory=True)

    def _observe(self, meta: Dict[str, Any]) -> None:
        self._published.inc()
        ingested = meta.get("in")
        if ingested is not None:
            self._latency.observe(max(0.0, time.time() - ingested))


def _describe(exc: BaseException) -> str:
    text = str(exc)
    if not text and exc.args:
        # AMQPConnectionError prints as '' but carries the connect failure.
        text = "; ".join(repr(a) if isinstance(a, BaseException) else str(a) for a in exc.args)
    if isinstance(exc, (pex.UnroutableError, pex.NackError)):
        text = "%d message(s)" % len(getattr(exc, "messages", []) or [])
    return "%s: %s" % (type(exc).__name__, text) if text else type(exc).__name__
