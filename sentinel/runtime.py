"""Process setup shared by ``sentinel run`` and ``python -m bytewax.run``."""

from __future__ import annotations

import gc
import logging
import os
import sys
from typing import List, NamedTuple, Optional

from flows import build_flow, make_alert_sinks, make_dead_letter_sink, make_source
from operators.silences import Controls
from sentinel import health, metrics, pii, policy_reload, redeploy
from sentinel.config import FlowConfig
from sentinel.crosskey import CrossKey
from sentinel.health import READINESS, watch_sink, watch_source

log = logging.getLogger("sentinel")


def setup_logging(level: str = "") -> None:
    level = level or os.environ.get("SENTINEL_LOG_LEVEL", "INFO")
    root = logging.getLogger()
    if not root.handlers:
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(h)
    root.setLevel(level.upper())
    pii.install_log_filter(root)  # personal data and secrets are masked in every log line
    for noisy in ("pika", "httpx", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # pika logs every failed connection attempt as errors with tracebacks; the
    # RabbitMQ sink logs each failure (and its retry) in one line itself.
    for chatty in ("pika.adapters.utils.connection_workflow", "pika.adapters.utils.io_services_utils",
                   "pika.adapters.blocking_connection"):
        logging.getLogger(chatty).setLevel(logging.CRITICAL)


# Net allocations of containers between two young-generation collections (CPython's default: 700).
GC_YOUNG_THRESHOLD = 10_000


def tune_gc() -> None:
    """Collect the young generation every GC_YOUNG_THRESHOLD net container allocations, not 700.

    A batch makes and drops thousands of short-lived containers (a tuple per request on its way to
    columns, the lists of the windows it closes); at 700 the collector ran about 700 times on the 24 h
    enterprise-mix replay and took 6-7% of its CPU (0.7-0.8 s of 11-12 s), at 10,000 a dozen times
    (0.05 s). Cyclic garbage waits at most that many allocations longer; nothing else changes."""
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)


class Shared(NamedTuple):
    """What the process's flow shares across its keys, made by :func:`prepare` and given to the flow by
    :func:`watched_flow`: the silences and feedback the control listener feeds, and the cross-key
    references kept in the process's file."""

    controls: Controls
    crosskey: CrossKey


def prepare(cfg: FlowConfig, process_id: int = 0, recovery_directory: Optional[str] = None,
            flow_path: Optional[str] = None) -> Shared:
    """Logging, the metrics endpoint, the control listener, the cross-key references and the watcher of the
    flow definition ``flow_path`` (a changed ``policies:`` block is taken up, sentinel/policy_reload.py), once
    per process; the silences and references for :func:`watched_flow`.

    Processes of one cluster on one host each need a port: process N serves
    on ``metrics.port + N`` (``sentinel run -i N``), unless
    ``SENTINEL_METRICS_PORT_OFFSET`` says otherwise (0 on Kubernetes, where
    every pod has its own address).
    """
    setup_logging()
    tune_gc()
    metrics.get_metrics().configure(cfg.metrics.max_service_labels, cfg.metrics.max_model_labels)
    port = cfg.metrics.port
    if port:
        offset = int(os.environ.get("SENTINEL_METRICS_PORT_OFFSET", process_id) or 0)
        try:
            health.serve(port + offset, cfg.metrics.host)
        except OSError as ex:
            raise SystemExit(f"metrics: cannot listen on {cfg.metrics.host}:{port + offset}: {ex.strerror or ex} "
                             f"(set metrics.port to another port, or 0 to turn the endpoint off)") from None
    # The control listener is one per process: a second start in the process shares its silences.
    controls = _listener.controls if _listener is not None else Controls()
    start_control(cfg, controls)
    ck = cfg.state.cross_key_file
    if ck is None and recovery_directory:
        ck = os.path.join(recovery_directory, "sentinel-cross-key-p{process}.json")
    crosskey = CrossKey(ck.replace("{process}", str(process_id)) if ck else None)
    if recovery_directory:
        record_settings(cfg, recovery_directory)
    policy_reload.start(flow_path, cfg)
    log.info("flow %r: source %s, sinks %s, dead letters %s, windows %.0fs", cfg.name, cfg.source.kind,
             ",".join(s.kind for s in cfg.sinks) or "none", cfg.dead_letters.kind, cfg.windows.size)
    return Shared(controls, crosskey)


def record_settings(cfg: FlowConfig, recovery_directory: str) -> None:
    """Log what this start changes for the restored keys, then store the flow's settings with the state."""
    stored = redeploy.load(recovery_directory)
    if stored is not None:
        _, applied = redeploy.compare(stored, cfg)
        for line in applied:
            log.info("redeploy: %s (takes effect on every restored key)", line)
    try:
        redeploy.save(recovery_directory, cfg)
    except OSError as ex:
        raise SystemExit(f"recovery directory {recovery_directory}: cannot store the flow's settings: "
                         f"{ex.strerror or ex}") from None


def watched_flow(cfg: FlowConfig, shared: Shared):
    """The flow of ``cfg`` with its source and sinks reporting to /readyz (:mod:`sentinel.health`), sharing
    ``shared`` (from :func:`prepare`)."""
    READINESS.reset()
    metrics.get_metrics().reset_clock()
    sinks = [watch_sink(s, f"sink alerts_out_{i}") for i, s in enumerate(make_alert_sinks(cfg))]
    return build_flow(cfg, source=watch_source(make_source(cfg)), alert_sinks=sinks,
                      dead_letter_sink=watch_sink(make_dead_letter_sink(cfg), "sink dead_letters_out"),
                      controls=shared.controls, crosskey=shared.crosskey)


_listener = None


def start_control(cfg: FlowConfig, controls: Controls) -> None:
    """Read silences and feedback from Kafka into ``controls`` (catch up first, then follow), once per process."""
    global _listener
    c = cfg.control_settings()
    if c is None or _listener is not None:
        return
    from sentinel.control import ControlListener, load_key

    try:
        key = load_key(c.hmac_key_env, c.hmac_key_file)
    except ValueError as ex:
        raise SystemExit(str(ex)) from None
    controls.configure(max_silences=c.max_silences, max_pending_feedback=c.max_pending_feedback)
    alerts_topic = next((s.topic for s in cfg.sinks if s.kind == "kafka" and s.brokers == c.brokers), None)
    _listener = ControlListener(c.brokers, c.topic, c.feedback_topic, controls, extra=c.config,
                                alerts_topic=alerts_topic, key=key, max_silence=c.max_silence)
    if key is None:
        log.warning("control: no control.hmac_key_env / hmac_key_file: anyone who can write to %s may silence "
                    "alerts", " and ".join(t for t in (c.topic, c.feedback_topic) if t))
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
    errors.extend(_sink_dirs(cfg, _writable_dir))
    return errors


def _sink_dirs(cfg: FlowConfig, check) -> List[str]:
    """``check`` (a path -> why-not function) on the directories the sinks keep: spools, Qdrant's."""
    from sinks.qdrant import is_server

    errors: List[str] = []
    for i, s in enumerate(cfg.sinks):
        if s.kind in ("rabbitmq", "kafka", "incident_store", "alertmanager", "webhook"):
            spool = s.spool_base()
            why = check(spool)
            if why:
                errors.append(f"sinks[{i}].spool_dir {spool!r} cannot be used: {why}")
        elif s.kind == "qdrant" and s.location != ":memory:" and not is_server(s.location):
            why = check(s.location)
            if why:
                errors.append(f"sinks[{i}].location {s.location!r} cannot be used: {why}")
    return errors


def _creatable(path: str) -> Optional[str]:
    """Why a directory could not be created at ``path`` (or used, if it exists), without creating anything."""
    p = os.path.abspath(path)
    while not os.path.exists(p):
        parent = os.path.dirname(p)
        if parent == p:
            break
        p = parent
    if not os.path.isdir(p):
        return f"{p} is not a directory"
    if not os.access(p, os.W_OK | os.X_OK):
        return f"{p} is not writable"
    return None


def check_paths(cfg: FlowConfig) -> List[str]:
    """:func:`preflight` for ``sentinel check``: the same questions, nothing created."""
    errors: List[str] = []
    src = cfg.source
    if src.kind == "file":
        if not os.path.exists(src.path):
            errors.append(f"source.path {src.path!r} does not exist")
        elif os.path.isdir(src.path) or not os.access(src.path, os.R_OK):
            errors.append(f"source.path {src.path!r} cannot be read")
    files = [(f"sinks[{i}].path", s.path) for i, s in enumerate(cfg.sinks) if s.kind == "jsonl"]
    if cfg.dead_letters.kind == "jsonl":
        files.append(("dead_letters.path", cfg.dead_letters.path))
    for where, path in files:
        if os.path.isdir(path):
            errors.append(f"{where} {path!r} is a directory")
            continue
        why = _creatable(os.path.dirname(os.path.abspath(path)))
        if why:
            errors.append(f"{where} {path!r} cannot be written: {why}")
    errors.extend(_sink_dirs(cfg, _creatable))
    errors.extend(check_control_key(cfg))
    return errors


def check_control_key(cfg: FlowConfig) -> List[str]:
    """The control listener's signing key, when one is configured, can be read."""
    c = cfg.control_settings()
    if c is None:
        return []
    from sentinel.control import load_key

    try:
        load_key(c.hmac_key_env, c.hmac_key_file)
    except ValueError as ex:
        return [str(ex)]
    return []


def check_cluster(process_id: Optional[int], addresses: Optional[str]) -> Optional[str]:
    """What is wrong with ``-i`` / ``-a``, in one line, or None."""
    if process_id is None and addresses is None:
        return None
    if process_id is None:
        return "--addresses needs --process-id (this process's index in the list)"
    if not addresses:
        return "--process-id needs --addresses (host:port of every process, separated by ';')"
    addrs = addresses.split(";")
    for a in addrs:
        host, sep, port = a.strip().rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            return f"--addresses: {a!r} is not host:port"
    if not 0 <= process_id < len(addrs):
        return (f"--process-id {process_id} is not an index of the {len(addrs)} address(es) given "
                f"(0 to {len(addrs) - 1})")
    return None


def check_recovery_directory(path: str) -> Optional[str]:
    """Why ``path`` cannot be the recovery directory (missing, not initialised, writable by others), or None."""
    import glob
    import stat

    if not os.path.isdir(path):
        return (f"recovery directory {path} does not exist: create it and initialise it with "
                f"`python -m bytewax.recovery {path} 1`")
    st = os.stat(path)
    if st.st_mode & stat.S_IWOTH:
        return (f"recovery directory {path} is writable by others (mode {stat.S_IMODE(st.st_mode):o}): "
                f"anyone could plant state there; chmod o-w {path}")
    if not glob.glob(os.path.join(glob.escape(path), "part-*.sqlite3")):
        return (f"recovery directory {path} is not initialised: run `python -m bytewax.recovery {path} 1` "
                f"first")
    return None


def check_brokers(cfg: FlowConfig) -> List[str]:
    """Brokers that refuse the flow: a RabbitMQ or Kafka sink's login refused, Kafka brokers of the source or
    control topic that do not answer or refuse the login (each check bounded by 10 s)."""
    errors: List[str] = []
    for i, s in enumerate(cfg.sinks):
        if s.kind == "rabbitmq":
            from sinks.rabbitmq import login_problem

            why = login_problem(s.url, password=s.password, tls=s.tls)
            if why:
                errors.append(f"sinks[{i}].url: {why}")
    from sources.kafka import broker_problem

    # Sinks and dead letters spool while their brokers are away: only a refused login stops the start.
    clients = []
    if cfg.source.kind == "kafka":
        clients.append(("source", cfg.source.brokers, cfg.source.config, False))
    c = cfg.control_settings()
    if c is not None:
        clients.append(("control", c.brokers, c.config, False))
    clients += [(f"sinks[{i}]", s.brokers, s.config, True) for i, s in enumerate(cfg.sinks) if s.kind == "kafka"]
    if cfg.dead_letters.kind == "kafka":
        clients.append(("dead_letters", cfg.dead_letters.brokers, cfg.dead_letters.config, True))
    checked: List[tuple] = []
    for where, brokers, config, refused_only in clients:
        if (brokers, config) in checked:
            continue
        checked.append((brokers, config))
        why = broker_problem(brokers, config, refused_only=refused_only)
        if why:
            errors.append(f"{where}.brokers: {why}")
    return errors


def startup_checks(cfg: FlowConfig, where: str, recovery_directory: Optional[str] = None,
                   process_id: Optional[int] = None, addresses: Optional[str] = None,
                   cluster_args: bool = True) -> None:
    """Everything that would stop the flow at start, each in one line on stderr and exit 2, before Bytewax runs."""
    setup_logging()
    problems: List[str] = []
    if cluster_args:
        why = check_cluster(process_id, addresses)
        if why:
            problems.append(why)
    if not problems:
        problems = preflight(cfg) + check_control_key(cfg)
    if recovery_directory and not problems:
        why = check_recovery_directory(recovery_directory) or redeploy.refusal(recovery_directory, cfg)
        if why:
            problems.append(why)
    if not problems:
        problems = check_brokers(cfg)
    if problems:
        print("\n".join(f"{where}: {p}" for p in problems), file=sys.stderr)
        raise SystemExit(2)


def require_paths(cfg: FlowConfig, where: str) -> None:
    """Exit with status 2, naming each problem on a line of its own, unless :func:`preflight` finds none."""
    problems = preflight(cfg)
    if problems:
        print("\n".join(f"{where}: {p}" for p in problems), file=sys.stderr)
        raise SystemExit(2)
