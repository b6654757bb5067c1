"""RabbitMQ alert sink (SPEC section 2).

Topology, declared on every (re)connect when ``declare`` is true::

    exchange  sentinel.alerts            durable, topic
    queue     incidents.high-priority    durable, bound to alert.high.#, alert.critical.#
    queue     incidents.low-priority     durable, bound to alert.info.#, alert.low.#, alert.medium.#

Every alert is published with routing key ``alert.<severity>.<type>``,
``mandatory`` (an unroutable alert comes back as an error instead of vanishing),
persistent, ``content_type`` ``application/json`` and ``message_id`` =
``alert_id``, on a channel in publisher-confirm mode: ``write`` returns only
once the broker has confirmed every message of the batch.

Failures never drop an alert. A lost connection, a closed channel, a nack or a
returned (unroutable) message is logged, counted in
``sentinel_sink_errors_total{sink="rabbitmq"}`` and retried after a backoff
(0.5 s doubling to 10 s), reconnecting first when the connection is gone; only
the messages of the batch not yet confirmed are published again (a message whose
confirm was lost in the outage may arrive twice; ``message_id`` is stable, so
consumers can drop the duplicate). The retry goes on for as long as it takes,
turning an outage into backpressure, unless ``max_retry_s`` is set: then
:class:`RabbitMQDeliveryError` is raised once a batch has been failing for that
long. Errors that no retry can fix (bad credentials, a vhost the user may not
use, a declaration that conflicts with an existing exchange or queue) raise
:class:`RabbitMQDeliveryError` at once.

A ``BlockingConnection`` only answers heartbeats while it is in use, so a writer
that sits idle for long may find its connection closed by the broker: each
``write`` first services the connection (``process_data_events(0)``, cheap) and
reconnects if it died, before publishing anything.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Dict, List, Optional
from urllib.parse import parse_qs, quote, urlsplit

import pika
import pika.exceptions as pex

from sentinel.metrics import get_metrics
from sinks.base import Alert, Writer

log = logging.getLogger(__name__)

HIGH_SEVERITIES = ("high", "critical")
LOW_SEVERITIES = ("info", "low", "medium")

_BACKOFF_START_S = 0.5
_BACKOFF_MAX_S = 10.0

# Channel close codes that mean "misconfigured", not "try again later".
_FATAL_CHANNEL_CODES = {403, 406}  # ACCESS_REFUSED, PRECONDITION_FAILED


class RabbitMQDeliveryError(RuntimeError):
    """Alerts could not be delivered to RabbitMQ (and retrying will not help, or took too long)."""


def routing_key(alert: Alert) -> str:
    return "alert.%s.%s" % (alert.get("severity") or "info", alert.get("type") or "unknown")


class RabbitMQWriter(Writer):
    kind = "rabbitmq"

    def __init__(
        self,
        url: str = "amqp://guest:guest@127.0.0.1:5672/%2F",
        exchange: str = "sentinel.alerts",
        high_queue: str = "incidents.high-priority",
        low_queue: str = "incidents.low-priority",
        declare: bool = True,
        max_retry_s: Optional[float] = None,
        heartbeat: int = 30,
        blocked_connection_timeout: float = 60.0,
        connection_name: str = "llm-sentinel",
    ) -> None:
        self.url = url
        self.exchange = exchange
        self.high_queue = high_queue
        self.low_queue = low_queue
        self.declare = declare
        self.max_retry_s = max_retry_s
        self._params = self._parameters(url, heartbeat, blocked_connection_timeout, connection_name)
        self._conn: Optional[pika.BlockingConnection] = None
        self._ch: Any = None
        self._errors = get_metrics().sink_errors.labels(sink=self.kind)
        # Connect now so that a bad configuration shows at start-up; an
        # unreachable broker is only logged here and retried by write().
        try:
            self._connect()
        except pex.AMQPError as exc:
            self._raise_if_fatal(exc)
            log.warning("rabbitmq: cannot connect to %s yet (%s); will retry on first write", self._safe_url(), _describe(exc))
            self._drop_connection()
        except OSError as exc:
            log.warning("rabbitmq: cannot connect to %s yet (%s); will retry on first write", self._safe_url(), exc)
            self._drop_connection()

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
            params.connection_attempts = 1  # write() does the retrying, with backoff
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
                for queue, severities in ((self.high_queue, HIGH_SEVERITIES), (self.low_queue, LOW_SEVERITIES)):
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

    def _raise_if_fatal(self, exc: BaseException) -> None:
        if isinstance(exc, (pex.ProbableAuthenticationError, pex.AuthenticationError, pex.ProbableAccessDeniedError)):
            raise RabbitMQDeliveryError(
                "rabbitmq: %s refused the login (%s): check the user, password and vhost in the sink url"
                % (self._safe_url(), _describe(exc))
            ) from exc
        if isinstance(exc, pex.ChannelClosedByBroker) and exc.reply_code in _FATAL_CHANNEL_CODES:
            raise RabbitMQDeliveryError(
                "rabbitmq: broker rejected the exchange/queue setup or publish (%s): an existing exchange or "
                "queue with these names has other settings, or the user lacks permissions; "
                "exchange=%r high_queue=%r low_queue=%r"
                % (_describe(exc), self.exchange, self.high_queue, self.low_queue)
            ) from exc

    # -- publishing ---------------------------------------------------------

    def write(self, alerts: List[Alert], payloads: List[bytes]) -> None:
        if not alerts:
            return
        done = 0  # alerts[:done] are confirmed by the broker
        backoff = _BACKOFF_START_S
        first_failure: Optional[float] = None
        while True:
            try:
                if self._connected():
                    # Answer heartbeats / notice a connection that died while idle.
                    self._conn.process_data_events(0)
                if not self._connected():
                    self._drop_connection()
                    self._connect()
                while done < len(alerts):
                    self._publish(alerts[done], payloads[done])
                    done += 1
                if first_failure is not None:
                    log.info("rabbitmq: batch of %d delivered after %.1fs of retries", len(alerts), time.monotonic() - first_failure)
                return
            except (pex.AMQPError, OSError) as exc:
                self._raise_if_fatal(exc)
                self._errors.inc()
                now = time.monotonic()
                if first_failure is None:
                    first_failure = now
                elapsed = now - first_failure
                pending = len(alerts) - done
                if self.max_retry_s is not None and elapsed >= self.max_retry_s:
                    self._drop_connection()
                    raise RabbitMQDeliveryError(
                        "rabbitmq: gave up after %.1fs (max_retry_s=%s): %d of %d alerts not confirmed by %s "
                        "(exchange %r); last error: %s"
                        % (elapsed, self.max_retry_s, pending, len(alerts), self._safe_url(), self.exchange, _describe(exc))
                    ) from exc
                if isinstance(exc, (pex.UnroutableError, pex.NackError)):
                    # The channel is still usable: no reconnect needed.
                    log.warning(
                        "rabbitmq: %s for routing key %r (%d alerts pending); retrying in %.1fs",
                        type(exc).__name__, routing_key(alerts[done]), pending, backoff,
                    )
                else:
                    log.warning(
                        "rabbitmq: delivery to %s failed (%s); %d alerts pending, reconnecting in %.1fs",
                        self._safe_url(), _describe(exc), pending, backoff,
                    )
                    self._drop_connection()
                if self.max_retry_s is not None:
                    # One last attempt right at the deadline, none after it.
                    time.sleep(min(backoff, max(0.0, self.max_retry_s - elapsed)))
                else:
                    time.sleep(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX_S)

    def _publish(self, alert: Alert, payload: bytes) -> None:
        headers: Dict[str, Any] = {}
        for field in ("severity", "type", "service"):
            value = alert.get(field)
            if value is not None:
                headers[field] = str(value)
        props = pika.BasicProperties(
            content_type="application/json",
            delivery_mode=pika.DeliveryMode.Persistent,
            message_id=str(alert["alert_id"]),
            timestamp=int(time.time()),
            app_id="llm-sentinel",
            headers=headers,
        )
        # In confirm mode this blocks until the broker acks; raises
        # UnroutableError (returned, mandatory) or NackError.
        self._ch.basic_publish(self.exchange, routing_key(alert), payload, properties=props, mandatory=True)

    def close(self) -> None:
        self._drop_connection()


def _describe(exc: BaseException) -> str:
    text = str(exc)
    if isinstance(exc, (pex.UnroutableError, pex.NackError)):
        text = "%d message(s)" % len(getattr(exc, "messages", []) or [])
    return "%s: %s" % (type(exc).__name__, text) if text else type(exc).__name__
