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
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, List, Optional

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

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
    from sentinel.metrics import get_metrics

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
