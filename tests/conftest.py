"""Shared fixtures: real brokers for integration tests (never mocks, never skips).

* ``tansu`` - a Tansu Kafka broker (in-memory storage) on a free loopback port,
  one per test session; yields ``"127.0.0.1:PORT"`` (the one in
  ``SENTINEL_TEST_KAFKA`` when .ci/run has started it).
* ``kafka_topic`` - factory: ``kafka_topic(partitions=1)`` creates a uniquely
  named topic on that broker and returns its name.
* ``rabbitmq_url`` - the local RabbitMQ (``SENTINEL_TEST_AMQP_URL`` or
  ``amqp://guest:guest@127.0.0.1:5672/%2F``), started with
  ``rabbitmq-server -detached`` when it does not answer.
* ``fresh_rabbit`` - factory: unique exchange / queue names, as keyword
  arguments for :class:`sinks.rabbitmq.RabbitMQWriter`; deleted afterwards.

A missing broker fails the test with a clear message: these tests are the
proof that the sinks work against the real thing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Callable, Dict, Iterator, List

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from devtools.tansu import TansuError, free_port, stop_tansu, tansu_broker  # noqa: E402, F401 (stop_tansu: for tests)
from devtools.tansu import start_tansu as _start_tansu  # noqa: E402
from devtools.tansu import wait_for_kafka as _wait_for_kafka  # noqa: E402

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"

# Consumer settings that work with Tansu 0.6 + confluent-kafka 2.16: the group
# join completes only after half of session.timeout.ms, cooperative-sticky never
# hands partitions over, and a low fetch backoff keeps polling snappy.
TANSU_CONSUMER_CONFIG = {
    "session.timeout.ms": 6000,
    "partition.assignment.strategy": "range",
    "auto.offset.reset": "earliest",
    "fetch.queue.backoff.ms": 10,
    "enable.auto.commit": False,
}


# -- Kafka (Tansu) -------------------------------------------------------------


def _free_port() -> int:
    return free_port()


def start_tansu(address: str, log_path: Path) -> subprocess.Popen:
    """Start a Tansu broker (memory storage) on ``address`` ("127.0.0.1:PORT"); fail the test if there is none."""
    try:
        return _start_tansu(address, log_path)
    except TansuError as exc:
        pytest.fail(str(exc), pytrace=False)


def wait_for_kafka(address: str, proc: subprocess.Popen, log_path: Path, timeout_s: float = 30.0) -> None:
    """Return once the broker answers; fail the test (with its log) otherwise."""
    try:
        _wait_for_kafka(address, proc, log_path, timeout_s)
    except TansuError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def tansu(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The broker .ci/run started (``SENTINEL_TEST_KAFKA``), else one of our own."""
    given = os.environ.get("SENTINEL_TEST_KAFKA")
    if given:
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": given})
        try:
            admin.list_topics(timeout=15)
        except Exception as exc:
            pytest.fail("SENTINEL_TEST_KAFKA=%s does not answer: %s" % (given, exc), pytrace=False)
        del admin
        yield given
        return
    broker = tansu_broker(str(tmp_path_factory.mktemp("tansu")))
    try:
        address = broker.__enter__()
    except TansuError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield address
    finally:
        broker.__exit__(None, None, None)


@pytest.fixture(scope="session")
def kafka_topic(tansu: str) -> Iterator[Callable[..., str]]:
    """Factory: ``kafka_topic(partitions=1, prefix="test")`` -> a new topic's name."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": tansu})

    def make(partitions: int = 1, prefix: str = "test") -> str:
        name = "%s.%s" % (prefix, uuid.uuid4().hex[:12])
        futures = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
        for future in futures.values():
            future.result(timeout=15)
        return name

    yield make
    del admin  # close the connection before the broker stops (see ``tansu``)


# -- RabbitMQ ------------------------------------------------------------------


def _amqp_answers(url: str) -> "Exception | None":
    import pika

    params = pika.URLParameters(url)
    params.connection_attempts = 1
    params.socket_timeout = 2
    params.blocked_connection_timeout = 5
    try:
        conn = pika.BlockingConnection(params)
    except Exception as exc:
        return exc
    conn.close()
    return None


@pytest.fixture(scope="session")
def rabbitmq_url() -> str:
    url = os.environ.get("SENTINEL_TEST_AMQP_URL", DEFAULT_AMQP_URL)
    error = _amqp_answers(url)
    if error is None:
        return url
    server = shutil.which("rabbitmq-server")
    if server is None:
        pytest.fail(
            "RabbitMQ at %s does not answer (%r) and rabbitmq-server is not on PATH to start it"
            % (url, error),
            pytrace=False,
        )
    started = subprocess.run([server, "-detached"], capture_output=True, text=True, timeout=60)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        time.sleep(1)
        error = _amqp_answers(url)
        if error is None:
            return url
    pytest.fail(
        "RabbitMQ at %s still does not answer 60s after `rabbitmq-server -detached` (exit %s, stderr %r); "
        "last error: %r" % (url, started.returncode, started.stderr[-500:], error),
        pytrace=False,
    )


@pytest.fixture
def fresh_rabbit(rabbitmq_url: str) -> Iterator[Callable[[], Dict[str, str]]]:
    """Factory: ``fresh_rabbit()`` -> {exchange, high_queue, low_queue} with unique names.

    Pass them to ``RabbitMQWriter(url=rabbitmq_url, **names)``; the exchanges and
    queues handed out are deleted when the test ends.
    """
    import pika

    made: List[Dict[str, str]] = []

    def make() -> Dict[str, str]:
        tag = uuid.uuid4().hex[:10]
        names = {
            "exchange": "test.alerts.%s" % tag,
            "high_queue": "test.incidents.high.%s" % tag,
            "low_queue": "test.incidents.low.%s" % tag,
        }
        made.append(names)
        return names

    yield make

    if not made:
        return
    try:
        conn = pika.BlockingConnection(pika.URLParameters(rabbitmq_url))
    except Exception:
        return
    try:
        for names in made:
            for queue in (names["high_queue"], names["low_queue"]):
                ch = conn.channel()
                try:
                    ch.queue_delete(queue)
                except Exception:
                    pass
            ch = conn.channel()
            try:
                ch.exchange_delete(names["exchange"])
            except Exception:
                pass
    finally:
        try:
            conn.close()
        except Exception:
            pass


def drain_queue(url: str, queue: str) -> List[tuple]:
    """Take every message off ``queue`` now: [(method, properties, body), ...]."""
    import pika

    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        ch = conn.channel()
        out = []
        while True:
            method, props, body = ch.basic_get(queue, auto_ack=True)
            if method is None:
                return out
            out.append((method, props, body))
    finally:
        conn.close()
