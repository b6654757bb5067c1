"""The metrics port: ``/metrics``, ``/healthz`` (the process is alive) and ``/readyz`` (the flow reads).

``/readyz`` answers 200 once every part the flow was built with has come up:
each source partition was built and returned from its first read (the
Bytewax cluster formed, the partition was assigned to a worker, and the
source answered), and each alert and dead-letter sink partition was built
(brokers connected). Until then, and when the process is stopping, it
answers 503 and names what it waits for. ``sentinel_ready`` says the same
as a gauge.
"""

from __future__ import annotations

import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, List, Optional

from bytewax.inputs import (
    DynamicSource, FixedPartitionedSource, StatefulSourcePartition, StatelessSourcePartition,
)
from bytewax.outputs import (
    DynamicSink, FixedPartitionedSink, StatefulSinkPartition, StatelessSinkPartition,
)
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from sentinel.metrics import get_metrics

log = logging.getLogger(__name__)


class Readiness:
    """What the flow waits for before it is ready: named parts, each marked up once.

    >>> r = Readiness()
    >>> r.ready(), r.waiting()
    (False, ['the flow to be built'])
    >>> r.expect("source"); r.expect("sink alerts_out_0")
    >>> r.mark("source"); r.ready(), r.waiting()
    (False, ['sink alerts_out_0'])
    >>> r.mark("sink alerts_out_0"); r.ready()
    True
    """

    def __init__(self, on_change=None) -> None:
        self._parts: Dict[str, bool] = {}
        self._stopping = False
        self._lock = threading.Lock()
        self._on_change = on_change

    def expect(self, part: str) -> None:
        with self._lock:
            self._parts.setdefault(part, False)
        self._changed()

    def mark(self, part: str) -> None:
        if self._parts.get(part):
            return
        with self._lock:
            self._parts[part] = True
        self._changed()

    def stopping(self) -> None:
        self._stopping = True
        self._changed()

    def waiting(self) -> List[str]:
        if self._stopping:
            return ["nothing: the flow is stopping"]
        with self._lock:
            if not self._parts:
                return ["the flow to be built"]
            return sorted(p for p, up in self._parts.items() if not up)

    def ready(self) -> bool:
        return not self.waiting()

    def reset(self) -> None:
        with self._lock:
            self._parts.clear()
            self._stopping = False
        self._changed()

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change(self.ready())


def _set_gauge(up: bool) -> None:
    get_metrics().ready.set(1 if up else 0)


READINESS = Readiness(_set_gauge)


def _handler(registry: CollectorRegistry, readiness: Readiness):
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                self._send(200, b"ok\n")
            elif path == "/readyz":
                waiting = readiness.waiting()
                if waiting:
                    self._send(503, ("not ready: waiting for " + ", ".join(waiting) + "\n").encode())
                else:
                    self._send(200, b"ready\n")
            elif path == "/":
                self._send(200, b"LLM-Sentinel: /metrics /healthz /readyz\n")
            else:
                self._send(404, b"not found\n")

        def _send(self, code: int, body: bytes, ctype: str = "text/plain; charset=utf-8") -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, fmt: str, *args: Any) -> None:  # scrapes and probes are not news
            pass

    return Handler


class Server(ThreadingHTTPServer):
    daemon_threads = True


def start_server(port: int, host: str, registry: CollectorRegistry,
                 readiness: Optional[Readiness] = None) -> Server:
    """Serve /metrics, /healthz and /readyz on ``host:port`` from a daemon thread."""
    srv = Server((host, port), _handler(registry, readiness or READINESS))
    threading.Thread(target=srv.serve_forever, name="sentinel-http", daemon=True).start()
    return srv


_serve_lock = threading.Lock()
_server_port: Optional[int] = None


def serve(port: int, host: str = "127.0.0.1") -> Optional[int]:
    """Start the metrics port once per process (/metrics, /healthz, /readyz); port 0 turns it off."""
    global _server_port
    if not port:
        return None
    m = get_metrics()
    with _serve_lock:
        if _server_port is not None:
            return _server_port
        start_server(port, host, m.registry)
        _server_port = port
    log.info("metrics on http://%s:%d/metrics (health: /healthz, /readyz)", host, port)
    return port


# -- watching the flow's source and sinks --------------------------------------------------


class _Reads:
    """Marks the source up after its first read, and stamps ``sentinel_last_event_timestamp_seconds``."""

    def __init__(self, readiness: Readiness, part: str) -> None:
        self._readiness = readiness
        self._part = part
        self._up = False
        self._last = get_metrics().last_event_timestamp

    def saw(self, batch) -> None:
        if not self._up:
            self._up = True
            self._readiness.mark(self._part)
        if batch:
            self._last.set(time.time())


class _Watched:
    """What both kinds of watched partition do: pass every call on, and tell ``reads`` of each batch."""

    def __init__(self, inner, reads: _Reads) -> None:
        self._inner = inner
        self._reads = reads

    def next_batch(self):
        batch = self._inner.next_batch()
        self._reads.saw(batch)
        return batch

    def next_awake(self):
        return self._inner.next_awake()

    def close(self) -> None:
        self._inner.close()


class _WatchedStatefulPart(_Watched, StatefulSourcePartition):
    def snapshot(self):
        return self._inner.snapshot()


class _WatchedStatelessPart(_Watched, StatelessSourcePartition):
    pass


class _WatchedFixedSource(FixedPartitionedSource):
    def __init__(self, inner: FixedPartitionedSource, readiness: Readiness) -> None:
        self._inner = inner
        self._readiness = readiness

    def list_parts(self):
        return self._inner.list_parts()

    def build_part(self, step_id, for_part, resume_state):
        part = self._inner.build_part(step_id, for_part, resume_state)
        return _WatchedStatefulPart(part, _Reads(self._readiness, "source"))


class _WatchedDynamicSource(DynamicSource):
    def __init__(self, inner: DynamicSource, readiness: Readiness) -> None:
        self._inner = inner
        self._readiness = readiness

    def build(self, step_id, worker_index, worker_count):
        part = self._inner.build(step_id, worker_index, worker_count)
        return _WatchedStatelessPart(part, _Reads(self._readiness, "source"))


def watch_source(source, readiness: Optional[Readiness] = None):
    """``source`` reporting to ``readiness``: the part "source" is up once a partition returned from a read."""
    r = readiness or READINESS
    r.expect("source")
    if isinstance(source, FixedPartitionedSource):
        return _WatchedFixedSource(source, r)
    if isinstance(source, DynamicSource):
        return _WatchedDynamicSource(source, r)
    raise TypeError(f"cannot watch a source of type {type(source).__name__}")


class _WatchedDynamicSink(DynamicSink):
    def __init__(self, inner: DynamicSink, readiness: Readiness, name: str) -> None:
        self._inner = inner
        self._readiness = readiness
        self._name = name

    def build(self, step_id, worker_index, worker_count) -> StatelessSinkPartition:
        part = self._inner.build(step_id, worker_index, worker_count)
        self._readiness.mark(self._name)
        return part


class _WatchedFixedSink(FixedPartitionedSink):
    def __init__(self, inner: FixedPartitionedSink, readiness: Readiness, name: str) -> None:
        self._inner = inner
        self._readiness = readiness
        self._name = name

    def list_parts(self):
        return self._inner.list_parts()

    def part_fn(self, item_key: str) -> int:
        return self._inner.part_fn(item_key)

    def build_part(self, step_id, for_part, resume_state) -> StatefulSinkPartition:
        part = self._inner.build_part(step_id, for_part, resume_state)
        self._readiness.mark(self._name)
        return part


def watch_sink(sink, name: str, readiness: Optional[Readiness] = None):
    """``sink`` reporting to ``readiness``: the part ``name`` is up once a partition of it was built."""
    r = readiness or READINESS
    r.expect(name)
    if isinstance(sink, DynamicSink):
        return _WatchedDynamicSink(sink, r, name)
    if isinstance(sink, FixedPartitionedSink):
        return _WatchedFixedSink(sink, r, name)
    raise TypeError(f"cannot watch a sink of type {type(sink).__name__}")
