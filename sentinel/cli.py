"""The ``sentinel`` command (SPEC section 3): run, check, simulate."""

from __future__ import annotations

import argparse
import logging
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
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from bytewax.recovery import RecoveryConfig
    from bytewax._bytewax import cli_main

    from flows import build_flow
    from sentinel import shutdown
    from sentinel.runtime import prepare, startup_checks

    try:
        cfg = _load(args.config)
    except ConfigError as ex:
        print(ex, file=sys.stderr)
        return 2
    if args.workers < 1:
        print("--workers must be at least 1", file=sys.stderr)
        return 2
    startup_checks(cfg, args.config or "the default flow", args.recovery_directory, args.process_id, args.addresses)
    prepare(cfg, args.process_id or 0, args.recovery_directory)
    shutdown.install()
    if args.config is None:
        log.info("no flow definition given: running the embedded default (simulated telemetry, "
                 "24 simulated hours at 60x, alerts on stdout); Ctrl-C stops it")
    flow = build_flow(cfg)
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
    try:
        cli_main(flow, **kwargs)
    except KeyboardInterrupt:
        log.info("interrupted: stopped after %.1fs", time.monotonic() - t0)
        return 130
    if shutdown.requested():
        log.info("flow %r stopped on request after %.1fs; sinks flushed", cfg.name, time.monotonic() - t0)
    else:
        log.info("flow %r finished in %.1fs", cfg.name, time.monotonic() - t0)
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from sentinel.simulator import Simulator

    if args.hours <= 0:
        print("--hours must be > 0", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    sim = Simulator(seed=args.seed, hours=args.hours, rate=args.rate)
    n, labels_path = sim.write(args.out, args.labels)
    print(f"wrote {n} events to {args.out} and {len(sim.labels)} incident labels to {labels_path} "
          f"in {time.monotonic() - t0:.1f}s", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sentinel", description="LLM-Sentinel: streaming anomaly detection for LLM apps")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="run a flow (the embedded demo when no -c is given)")
    r.add_argument("-c", "--config", help="flow definition (YAML)")
    r.add_argument("-w", "--workers", type=int, default=1, help="worker threads in this process")
    r.add_argument("-i", "--process-id", type=int, help="this process's index in a cluster")
    r.add_argument("-a", "--addresses", help="cluster addresses host:port;host:port (with -i)")
    r.add_argument("-r", "--recovery-directory", help="Bytewax recovery directory (initialised partitions)")
    r.add_argument("-s", "--snapshot-interval", type=float, default=30.0, help="seconds between snapshots")
    r.set_defaults(func=cmd_run)

    c = sub.add_parser("check", help="validate a flow definition")
    c.add_argument("-c", "--config", required=True, help="flow definition (YAML)")
    c.set_defaults(func=cmd_check)

    s = sub.add_parser("simulate", help="write simulated telemetry and its incident labels")
    s.add_argument("--out", required=True, help="events file (JSON lines)")
    s.add_argument("--hours", type=float, default=6.0)
    s.add_argument("--seed", type=int, default=7)
    s.add_argument("--rate", type=float, default=18.5, help="mean requests per second")
    s.add_argument("--labels", help="labels file (default: OUT with .labels.jsonl)")
    s.set_defaults(func=cmd_simulate)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
