"""Process setup shared by ``sentinel run`` and ``python -m bytewax.run``."""

from __future__ import annotations

import logging
import os
import sys
from typing import List, Optional

from sentinel import crosskey, metrics
from sentinel.config import FlowConfig

log = logging.getLogger("sentinel")


def setup_logging(level: str = "") -> None:
    level = level or os.environ.get("SENTINEL_LOG_LEVEL", "INFO")
    root = logging.getLogger()
    if not root.handlers:
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(h)
    root.setLevel(level.upper())
    for noisy in ("pika", "httpx", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # pika logs every failed connection attempt as errors with tracebacks; the
    # RabbitMQ sink logs each failure (and its retry) in one line itself.
    for chatty in ("pika.adapters.utils.connection_workflow", "pika.adapters.utils.io_services_utils",
                   "pika.adapters.blocking_connection"):
        logging.getLogger(chatty).setLevel(logging.CRITICAL)


def prepare(cfg: FlowConfig, process_id: int = 0, recovery_directory: Optional[str] = None) -> None:
    """Logging, the metrics endpoint and the cross-key references, once per process.

    Processes of one cluster on one host each need a port: process N serves
    on ``metrics.port + N`` (``sentinel run -i N``), unless
    ``SENTINEL_METRICS_PORT_OFFSET`` says otherwise (0 on Kubernetes, where
    every pod has its own address).
    """
    setup_logging()
    port = cfg.metrics.port
    if port:
        offset = int(os.environ.get("SENTINEL_METRICS_PORT_OFFSET", process_id) or 0)
        try:
            metrics.serve(port + offset, cfg.metrics.host)
        except OSError as ex:
            raise SystemExit(f"metrics: cannot listen on {cfg.metrics.host}:{port + offset}: {ex.strerror or ex} "
                             f"(set metrics.port to another port, or 0 to turn the endpoint off)") from None
    start_control(cfg)
    ck = cfg.state.cross_key_file
    if ck is None and recovery_directory:
        ck = os.path.join(recovery_directory, "sentinel-cross-key-p{process}.pkl")
    crosskey.configure(ck.replace("{process}", str(process_id)) if ck else None)
    log.info("flow %r: source %s, sinks %s, dead letters %s, windows %.0fs", cfg.name, cfg.source.kind,
             ",".join(s.kind for s in cfg.sinks) or "none", cfg.dead_letters.kind, cfg.windows.size)


_listener = None


def start_control(cfg: FlowConfig) -> None:
    """Read silences and feedback from Kafka (catch up first, then follow), once per process."""
    global _listener
    c = cfg.control_settings()
    if c is None or _listener is not None:
        return
    from operators.silences import get_controls
    from sentinel.control import ControlListener

    alerts_topic = next((s.topic for s in cfg.sinks if s.kind == "kafka" and s.brokers == c.brokers), None)
    _listener = ControlListener(c.brokers, c.topic, c.feedback_topic, get_controls(), alerts_topic=alerts_topic)
    _listener.catch_up()
    _listener.start()


def _writable_dir(path: str) -> Optional[str]:
    """Why ``path`` cannot be used as a directory to write in, or None."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as ex:
        return ex.strerror or str(ex)
    if not os.access(path, os.W_OK | os.X_OK):
        return "not writable"
    return None


def preflight(cfg: FlowConfig) -> List[str]:
    """What of the flow's files and directories cannot be used, one line each (empty: all can).

    Run before the dataflow is built, so a wrong path is named in one line
    instead of surfacing as a failure inside Bytewax. Creates the directories
    (and alert files) the sinks would create anyway.
    """
    from sinks.qdrant import is_server

    errors: List[str] = []
    src = cfg.source
    if src.kind == "file":
        try:
            with open(src.path, "rb"):
                pass
        except OSError as ex:
            errors.append(f"source.path {src.path!r} cannot be read: {ex.strerror or ex}")
    files = [(f"sinks[{i}].path", s.path) for i, s in enumerate(cfg.sinks) if s.kind == "jsonl"]
    if cfg.dead_letters.kind == "jsonl":
        files.append(("dead_letters.path", cfg.dead_letters.path))
    for where, path in files:
        why = _writable_dir(os.path.dirname(os.path.abspath(path)))
        if why is None:
            try:
                with open(path, "ab"):
                    pass
            except OSError as ex:
                why = ex.strerror or str(ex)
        if why:
            errors.append(f"{where} {path!r} cannot be written: {why}")
    for i, s in enumerate(cfg.sinks):
        if s.kind in ("rabbitmq", "kafka"):
            spool = s.spool_base()
            why = _writable_dir(spool)
            if why:
                errors.append(f"sinks[{i}].spool_dir {spool!r} cannot be used: {why}")
        elif s.kind == "qdrant" and s.location != ":memory:" and not is_server(s.location):
            why = _writable_dir(s.location)
            if why:
                errors.append(f"sinks[{i}].location {s.location!r} cannot be used: {why}")
    return errors


def require_paths(cfg: FlowConfig, where: str) -> None:
    """Exit with status 2, naming each problem on a line of its own, unless :func:`preflight` finds none."""
    problems = preflight(cfg)
    if problems:
        print("\n".join(f"{where}: {p}" for p in problems), file=sys.stderr)
        raise SystemExit(2)
