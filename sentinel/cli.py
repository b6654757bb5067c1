"""The ``sentinel`` command (SPEC section 3): run, check, simulate."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from datetime import timedelta
from typing import List, Optional

from sentinel.config import ConfigError, FlowConfig, default_config, load_config

log = logging.getLogger("sentinel")


def _load(path: Optional[str]) -> FlowConfig:
    return default_config() if path is None else load_config(path)


def cmd_check(args: argparse.Namespace) -> int:
    from sentinel.runtime import check_paths

    if args.explain is not None and not args.config:
        return explain(args.explain)
    if not args.config:
        print("sentinel check: -c/--config is required (or --explain for the reference of every key)",
              file=sys.stderr)
        return 2
    try:
        cfg = load_config(args.config)
    except ConfigError as ex:
        print(ex, file=sys.stderr)
        return 2
    problems = check_paths(cfg)
    if problems:
        print("\n".join(f"{args.config}: {p}" for p in problems), file=sys.stderr)
        return 2
    print(f"{args.config}: ok (flow {cfg.name!r}: source {cfg.source.kind}, "
          f"{len(cfg.sinks)} sink(s): {', '.join(s.kind for s in cfg.sinks) or 'none'}, "
          f"dead letters {cfg.dead_letters.kind}, {cfg.windows.size:.0f}s windows)")
    if args.against:
        return check_against(cfg, args.config, args.against)
    if args.explain is not None:
        return explain(args.explain)
    return 0


def explain(prefix: str) -> int:
    """Print every key of a flow definition (those under ``prefix``): type, default, description."""
    import textwrap

    from sentinel.config import key_reference

    rows = [r for r in key_reference() if r.path == prefix or r.path.startswith(prefix)]
    if not rows:
        print(f"sentinel check --explain: no key starts with {prefix!r}", file=sys.stderr)
        return 2
    lines = []
    for r in rows:
        default = "" if r.default == "" else ", required" if r.default == "required" else f", default {r.default}"
        lines.append(f"{r.path}  ({r.type}{default})")
        lines.append(textwrap.fill(r.description, width=100, initial_indent="    ", subsequent_indent="    "))
    try:
        sys.stdout.write("\n".join(lines) + "\n")
        sys.stdout.flush()
    except BrokenPipeError:  # `sentinel check --explain | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def check_against(cfg: FlowConfig, where: str, recovery_directory: str) -> int:
    """What starting ``cfg`` on a recovery store would refuse (exit 2) or change (exit 0)."""
    import os

    from sentinel import redeploy

    if not os.path.isdir(recovery_directory):
        print(f"{recovery_directory}: not a directory", file=sys.stderr)
        return 2
    stored = redeploy.load(recovery_directory)
    if stored is None:
        print(f"{recovery_directory}: no flow settings stored ({redeploy.SETTINGS_FILE} is written at a start "
              f"with -r): nothing to compare")
        return 0
    refused, applied = redeploy.compare(stored, cfg)
    if refused:
        print("\n".join(f"{where}: against {recovery_directory}: refused: {r}" for r in refused), file=sys.stderr)
        return 2
    if not applied:
        print(f"{where}: against {recovery_directory}: no change to the restored keys")
    for line in applied:
        print(f"{where}: against {recovery_directory}: takes effect on every restored key: {line}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from bytewax.recovery import RecoveryConfig
    from bytewax._bytewax import cli_main

    from sentinel import progress, shutdown
    from sentinel.health import READINESS
    from sentinel.runtime import prepare, startup_checks, watched_flow
    from sinks.files import set_stdout_format

    try:
        cfg = _load(args.config)
    except ConfigError as ex:
        print(ex, file=sys.stderr)
        return 2
    if args.workers < 1:
        print("--workers must be at least 1", file=sys.stderr)
        return 2
    startup_checks(cfg, args.config or "the default flow", args.recovery_directory, args.process_id, args.addresses)
    set_stdout_format(None if args.format == "auto" else args.format)
    shared = prepare(cfg, args.process_id or 0, args.recovery_directory, args.config)
    shutdown.install()
    if args.config is None:
        log.info("no flow definition given: running the embedded default (simulated telemetry, "
                 "24 simulated hours at 60x, alerts on stdout); Ctrl-C stops it")
    flow = watched_flow(cfg, shared)
    kwargs = {"workers_per_process": args.workers}
    if args.process_id is None:
        shutdown.mark_started()  # no other process to wait for
    else:
        kwargs["process_id"] = args.process_id
        kwargs["addresses"] = args.addresses.split(";")
    if args.recovery_directory:
        kwargs["recovery_config"] = RecoveryConfig(args.recovery_directory)
        shutdown.keep_windows_on_stop()
        kwargs["epoch_interval"] = timedelta(seconds=args.snapshot_interval)
    t0 = time.monotonic()
    interval = args.progress if args.progress is not None else (5.0 if sys.stderr.isatty() else 30.0)
    reporter = progress.Reporter(interval)
    reporter.start()
    try:
        cli_main(flow, **kwargs)
    except KeyboardInterrupt:
        reporter.stop()
        log.info("interrupted: stopped after %.1fs", time.monotonic() - t0)
        progress.summary(cfg, time.monotonic() - t0)
        return 130
    finally:
        reporter.stop()
        READINESS.stopping()
    if shutdown.requested():
        log.info("flow %r stopped on request after %.1fs; sinks flushed", cfg.name, time.monotonic() - t0)
    else:
        log.info("flow %r finished in %.1fs", cfg.name, time.monotonic() - t0)
    progress.summary(cfg, time.monotonic() - t0)
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from simulator import Simulator

    if args.hours <= 0:
        print("--hours must be > 0", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    sim = Simulator(seed=args.seed, hours=args.hours, rate=args.rate)
    n, labels_path = sim.write(args.out, args.labels)
    print(f"wrote {n} events to {args.out} and {len(sim.labels)} incident labels to {labels_path} "
          f"in {time.monotonic() - t0:.1f}s", file=sys.stderr)
    return 0


class _Help(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown after each option; examples kept as written."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.default is False:
            return action.help or ""
        return super()._get_help_string(action)


_EXAMPLES = """examples:
  sentinel run                                   the built-in demo: simulated telemetry, alerts on stdout
  sentinel run -c flows/replay.yaml              replay a JSON-lines file through a flow definition
  sentinel run -c flow.yaml --format json | jq . JSON alerts even on a terminal
  sentinel run -c flow.yaml -r state/            with recovery (initialise state/ with
                                                 `python -m bytewax.recovery state/ 1` first)
  sentinel check -c flow.yaml                    validate a flow definition
  sentinel check -c new.yaml --against state/    what a redeploy of new.yaml would change for state/
  sentinel check --explain windows               every key under windows: type, default, what it does
  sentinel simulate --out events.jsonl --hours 6 simulated telemetry and its incident labels
"""


def _version() -> str:
    from sentinel.metrics import build_labels

    b = build_labels()
    return f"sentinel {b['version']} (Python {b['python']}, Bytewax {b['bytewax']})"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sentinel", description="LLM-Sentinel: streaming anomaly detection for LLM apps",
                                epilog=_EXAMPLES, formatter_class=_Help)
    p.add_argument("--version", action="version", version=_version())
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="run a flow (the embedded demo when no -c is given)", formatter_class=_Help,
                       description="Run a flow definition (the embedded demo when no -c is given). Alerts go to "
                       "the flow's sinks; metrics, /healthz and /readyz are served on metrics.port.",
                       epilog=_EXAMPLES)
    r.add_argument("-c", "--config", help="flow definition (YAML); none: the embedded demo")
    r.add_argument("-w", "--workers", type=int, default=1, help="worker threads in this process")
    r.add_argument("-i", "--process-id", type=int, help="this process's index in a cluster")
    r.add_argument("-a", "--addresses", help="cluster addresses host:port;host:port (with -i)")
    r.add_argument("-r", "--recovery-directory", help="Bytewax recovery directory (initialised partitions)")
    r.add_argument("-s", "--snapshot-interval", type=float, default=30.0, help="seconds between snapshots")
    r.add_argument("--format", choices=("auto", "text", "json"), default="auto",
                   help="stdout sink: one readable line per alert (text) or SPEC JSON lines (json); auto: text "
                   "when stdout is a terminal")
    r.add_argument("--progress", type=float, default=None, metavar="SECONDS",
                   help="seconds between progress lines on stderr (0: none); default 5 on a terminal, else 30")
    r.set_defaults(func=cmd_run)

    c = sub.add_parser("check", help="validate a flow definition", formatter_class=_Help,
                       description="Validate a flow definition; with --against, say what starting it on a "
                       "recovery store would change (exit 0) or refuse (exit 2).")
    c.add_argument("-c", "--config", help="flow definition (YAML); required unless --explain")
    c.add_argument("--against", metavar="DIR", help="a recovery directory: compare with the settings it holds")
    c.add_argument("--explain", nargs="?", const="", metavar="KEY",
                   help="print every key of a flow definition (or those starting with KEY, e.g. detection.token_abuse) "
                   "with its type, default and description")
    c.set_defaults(func=cmd_check)

    s = sub.add_parser("simulate", help="write simulated telemetry and its incident labels", formatter_class=_Help)
    s.add_argument("--out", required=True, help="events file (JSON lines)")
    s.add_argument("--hours", type=float, default=6.0, help="simulated hours")
    s.add_argument("--seed", type=int, default=7, help="random seed")
    s.add_argument("--rate", type=float, default=18.5, help="mean requests per second")
    s.add_argument("--labels", help="labels file (default: OUT with .labels.jsonl)")
    s.set_defaults(func=cmd_simulate)

    db = sub.add_parser("dashboards", help="write (or check) the Grafana dashboards and Prometheus rules",
                        formatter_class=_Help)
    db.add_argument("--out", default="k8s/base", help="output directory")
    db.add_argument("--check", action="store_true", help="write nothing; exit 1 if a file there is stale")
    db.set_defaults(func=lambda a: __import__("sentinel.dashboards", fromlist=["main"]).main(
        ["--out", a.out] + (["--check"] if a.check else [])))

    ap = sub.add_parser("api", help="serve the incident API (REST, WebSocket, /docs) over the flow's incident store",
                        formatter_class=_Help)
    ap.add_argument("-c", "--config", required=True, help="flow definition with an incident_store sink")
    ap.add_argument("--host", help="listen address (default api.host)")
    ap.add_argument("--port", type=int, help="listen port (default api.port)")
    ap.set_defaults(func=_cmd_api)

    tk = sub.add_parser("token", help="print an API token (HS256) for a role", formatter_class=_Help)
    tk.add_argument("-c", "--config", required=True, help="flow definition (its api.auth secret signs the token)")
    tk.add_argument("--role", required=True, choices=("viewer", "operator", "admin"))
    tk.add_argument("--sub", required=True, help="who the token is for")
    tk.add_argument("--ttl", default="8h", help="lifetime: seconds or 30m, 8h, 7d")
    tk.set_defaults(func=_cmd_token)

    au = sub.add_parser("audit", help="check the incident store's audit trail", formatter_class=_Help)
    au_sub = au.add_subparsers(dest="audit_command", required=True)
    av = au_sub.add_parser("verify", help="exit 1 if an entry was changed, removed or reordered")
    av.add_argument("-c", "--config", required=True, help="flow definition with an incident_store sink")
    av.add_argument("--expect-head", help="a head hash printed earlier: entries removed after it are found too")
    av.set_defaults(func=lambda a: __import__("sentinel.audit", fromlist=["verify_command"]).verify_command(
        a.config, a.expect_head))
    return p


def _api_extra_missing() -> Optional[str]:
    """The one line to print when the ``api`` extra (FastAPI, uvicorn, PyJWT) is not installed."""
    import importlib.util

    missing = [m for m in ("fastapi", "uvicorn", "jwt") if importlib.util.find_spec(m) is None]
    if missing:
        return f"sentinel: {', '.join(missing)} not installed; pip install 'llm-sentinel[api]'"
    return None


def _cmd_api(args: argparse.Namespace) -> int:
    if (why := _api_extra_missing()) is not None:
        print(why, file=sys.stderr)
        return 2
    from sentinel.api import serve

    return serve(args.config, args.host, args.port)


def _cmd_token(args: argparse.Namespace) -> int:
    if (why := _api_extra_missing()) is not None:
        print(why, file=sys.stderr)
        return 2
    from sentinel.auth import token_command
    from sentinel.config import parse_duration

    try:
        ttl = parse_duration(args.ttl)
    except ValueError as ex:
        print(f"--ttl: {ex}", file=sys.stderr)
        return 2
    return token_command(args.config, args.role, args.sub, ttl)


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
