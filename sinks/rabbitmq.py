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
* One sender thread per writer (:class:`~sinks.spooled.SpooledWriter`, shared
  with the Kafka sink) owns the AMQP connection. It reads the spool in
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
import ssl
import struct
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple
from urllib.parse import parse_qs, quote, urlsplit

import orjson
import pika
import pika.exceptions as pex

from sentinel.core.times import to_epoch
from sentinel.core.types import HIGH_SEVERITIES, LOW_SEVERITIES, SEVERITIES
from sinks.base import Alert
from sinks.spool import DEFAULT_MAX_BYTES
from sinks.spooled import Progress, SpooledWriter

log = logging.getLogger(__name__)


# Channel close codes that mean "misconfigured", not "try again later".
_FATAL_CHANNEL_CODES = {403, 406}  # ACCESS_REFUSED, PRECONDITION_FAILED

_META = struct.Struct("<I")


class RabbitMQDeliveryError(RuntimeError):
    """Alerts could not be delivered to RabbitMQ, and retrying will not help (or took too long)."""


def routing_key(alert: Alert) -> str:
    return "alert.%s.%s" % (alert.severity or "info", alert.type or "unknown")


def default_bindings(high_queue: str = "incidents.high-priority",
                     low_queue: str = "incidents.low-priority") -> Dict[str, List[str]]:
    """The SPEC bindings: high/critical to one queue, the other severities to the other."""
    return {high_queue: list(HIGH_SEVERITIES), low_queue: list(LOW_SEVERITIES)}


# -- spool records -------------------------------------------------------------


def _timestamp(alert: Alert) -> int:
    value = alert.detected_at
    if isinstance(value, str):
        try:
            return int(to_epoch(value))
        except ValueError:
            pass
    return int(time.time())


def encode_record(alert: Alert, payload: bytes) -> bytes:
    """What the spool keeps for one alert: everything the publish needs."""
    headers: Dict[str, str] = {}
    for field in ("severity", "type", "service", "status"):
        value = getattr(alert, field)
        if value is not None:
            headers[field] = str(value)
    meta = orjson.dumps({
        "rk": routing_key(alert),
        "id": str(alert.alert_id),
        "ts": _timestamp(alert),
        "h": headers,
        "in": alert.ingested_at,
    })
    return _META.pack(len(meta)) + meta + payload


def decode_record(record: bytes) -> Tuple[Dict[str, Any], bytes]:
    (n,) = _META.unpack_from(record, 0)
    start = _META.size
    return orjson.loads(record[start:start + n]), record[start + n:]


# -- the writer ------------------------------------------------------------------


class RabbitMQWriter(SpooledWriter):
    kind = "rabbitmq"
    error_class = RabbitMQDeliveryError
    retry_on = (pex.AMQPError, OSError)

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
        password: Optional[str] = None,
        ssl_context: Any = None,
        server_hostname: Optional[str] = None,
    ) -> None:
        self.url = url
        self.exchange = exchange
        self.declare = declare
        self.bindings: Dict[str, List[str]] = (
            {q: list(sevs) for q, sevs in bindings.items()} if bindings else default_bindings(high_queue, low_queue)
        )
        self._params = self._parameters(url, heartbeat, blocked_connection_timeout, connection_name,
                                        password, ssl_context, server_hostname)
        self.step_timeout = self._params.socket_timeout
        self._conn: Optional[pika.BlockingConnection] = None
        self._ch: Any = None
        self._key = "?"  # routing key of the message being published
        super().__init__(spool_dir or os.path.join("sentinel-spool", exchange, "worker-0"),
                         spool_max_bytes, drain_timeout, adopt_spools)

    # -- connection ---------------------------------------------------------

    @staticmethod
    def _parameters(url: str, heartbeat: int, blocked_timeout: float, name: str, password: Optional[str] = None,
                    ssl_context: Any = None, server_hostname: Optional[str] = None) -> pika.URLParameters:
        parts = urlsplit(url)
        if password is not None and parts.username and parts.password is None:
            # pika needs user:password in the url; the password itself comes next
            url = parts._replace(netloc=parts.netloc.replace(parts.username + "@", parts.username + ":-@", 1)).geturl()
        params = pika.URLParameters(url)
        if password is not None:  # read from the environment or a file, never from the url
            params.credentials = pika.PlainCredentials(params.credentials.username, password)
        if ssl_context is not None:  # amqps with the sink's CA, client certificate and verification
            params.ssl_options = pika.SSLOptions(ssl_context, server_hostname or params.host)
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
        scheme = "amqps" if p.ssl_options is not None else "amqp"
        return "%s://%s:%s/%s" % (scheme, p.host, p.port, quote(p.virtual_host, safe=""))

    def _where(self) -> str:
        return "%s (exchange %r)" % (self._safe_url(), self.exchange)

    def _open(self) -> None:
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

    _disconnect = _drop_connection

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

    # -- the sender thread ----------------------------------------------------

    def _record(self, alert: Alert, payload: bytes) -> bytes:
        return encode_record(alert, payload)

    def _deliver(self, batch: List[Tuple[int, bytes]], progress: Progress) -> None:
        if not self._connected():
            self._drop_connection()
            self._connect()
        for seq, record in batch:
            if self._past_drain_deadline():
                return
            meta, body = decode_record(record)
            self._key = meta["rk"]
            self._publish(meta, body)
            progress.confirm(seq, meta.get("in"))

    def _failure(self, exc: BaseException, backoff: float) -> str:
        if isinstance(exc, pex.UnroutableError):
            return ("UnroutableError: no queue bound to exchange %r takes routing key %r (%d alerts "
                    "pending); retrying in %.1fs" % (self.exchange, self._key, self.pending, backoff))
        if isinstance(exc, pex.NackError):
            return "NackError: broker refused a message (%d alerts pending); retrying in %.1fs" % (
                self.pending, backoff)
        self._drop_connection()
        return "delivery to %s failed (%s); %d alerts spooled, reconnecting in %.1fs" % (
            self._safe_url(), _describe(exc), self.pending, backoff)

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


def _describe(exc: BaseException) -> str:
    text = str(exc)
    if not text and exc.args:
        # AMQPConnectionError prints as '' but carries the connect failure.
        text = "; ".join(repr(a) if isinstance(a, BaseException) else str(a) for a in exc.args)
    if isinstance(exc, (pex.UnroutableError, pex.NackError)):
        text = "%d message(s)" % len(getattr(exc, "messages", []) or [])
    return "%s: %s" % (type(exc).__name__, text) if text else type(exc).__name__


def login_problem(url: str, timeout: float = 5.0, password: Any = None, tls: Any = None) -> Optional[str]:
    """Why RabbitMQ at ``url`` refuses this login (user, password, vhost), in one line; None when it accepts.

    A broker that does not answer is no problem here: the sink spools until it does. ``password`` and
    ``tls`` are the sink's settings (a secret reference, a ``tls:`` block); a secret that cannot be read,
    a certificate that cannot be loaded or a server that fails verification is a problem too.
    """
    from sentinel.tls import context_for, read_secret

    try:
        pw = read_secret(password, "password") if password is not None else None
        ctx = context_for(tls, "sink")
    except ValueError as ex:
        return str(ex)
    params = RabbitMQWriter._parameters(url, 30, 60.0, "llm-sentinel/login-check", pw, ctx,
                                        tls.server_hostname if tls is not None else None)
    params.socket_timeout = min(params.socket_timeout or timeout, timeout)
    safe = "%s://%s:%s/%s" % ("amqps" if ctx is not None else "amqp", params.host, params.port,
                              quote(params.virtual_host, safe=""))
    pika_log = logging.getLogger("pika")
    level = pika_log.level
    pika_log.setLevel(logging.CRITICAL + 1)  # pika logs the refusal itself, with a traceback at times
    try:
        conn = pika.BlockingConnection(params)
    except (pex.ProbableAuthenticationError, pex.AuthenticationError, pex.ProbableAccessDeniedError) as exc:
        return "%s refused the login (%s): check the user, password and vhost in the url" % (safe, _describe(exc))
    except ssl.SSLCertVerificationError as exc:
        return "%s: the server's certificate does not verify (%s)" % (safe, exc.verify_message)
    except (pex.AMQPError, OSError):
        return None
    finally:
        pika_log.setLevel(level)
    try:
        conn.close()
    except Exception:
        pass
    return None
