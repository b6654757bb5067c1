"""Recovery: the flow's per-key state (windows, baselines, episodes, incidents) survives a crash.

Bytewax snapshots every key's logic at epoch ends; after an abort the flow
resumes from the last snapshot and the source replays from its offset. The
alerts of an interrupted run and its resumption must be those of an
uninterrupted run (an alert emitted again from the replayed epoch carries the
same alert_id, so consumers see it once).
"""

import sqlite3
from datetime import timedelta
from pathlib import Path
from typing import List, Set

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSink, TestingSource, run_main

from flows import build_flow
from operators.guard import guarded, outcome_dead_letters
from operators.incidents import IncidentLogic, group_key
from operators.model_windows import ModelWindowLogic
from operators.parse import ParseLogic, parser_for
from sentinel.core.types import KeyGroup
from sentinel.crosskey import CrossKey
from sentinel.config import load_config_dict
from tests.helpers import T0, batches, steady


def config(**extra):
    return load_config_dict({"source": {"kind": "file", "path": "unused"}, "metrics": {"port": 0}, **extra})


def flow_for(items, alerts, crosskey=None):
    cfg = config()
    return build_flow(cfg, source=TestingSource(items), alert_sinks=[TestingSink(alerts)],
                      dead_letter_sink=TestingSink([]), crosskey=crosskey)


def slow(ts, lat):
    return lat * 5 if T0 + 60 * 60 <= ts < T0 + 72 * 60 else lat


def test_abort_and_resume_gives_the_same_alerts(tmp_path):
    items = batches(steady(100, latency_fn=slow), size=300)
    whole = []
    run_main(flow_for(items, whole))
    assert [a.status for a in whole if a.type == "latency"][:1] == ["firing"]

    init_db_dir(tmp_path, 1)
    rc = RecoveryConfig(str(tmp_path))
    cut = len(items) * 2 // 3  # after the incident started, before it resolved
    crashed = items[:cut] + [TestingSource.ABORT()] + items[cut:]  # the abort fires once
    first = []
    ck = str(tmp_path / "sentinel-cross-key-p0.pkl")  # each run a process of its own, with its file
    run_main(flow_for(crashed, first, CrossKey(ck)), epoch_interval=timedelta(0), recovery_config=rc)
    second = []
    run_main(flow_for(crashed, second, CrossKey(ck)), epoch_interval=timedelta(0), recovery_config=rc)
    ids = lambda xs: {(a.alert_id, a.status) for a in xs}  # noqa: E731
    assert ids(first) | ids(second) == ids(whole)
    assert second, "the resumed run finished the episode"
    assert (tmp_path / "sentinel-cross-key-p0.pkl").exists()  # written at a snapshot


def op_stateful_flow(items, alerts, crosskey):
    """The steps whose state a store holds, wired as before they were operators: ``op.stateful`` in the flow."""
    cfg = config()
    parser = parser_for(cfg)
    flow = Dataflow(cfg.name)
    raw = op.input("input", flow, TestingSource(items))
    by_partition = op.key_on("by_partition", raw, lambda b: b.partition)
    tagged = op.stateful("parse", by_partition, lambda st: ParseLogic(parser, cfg.windows.idle_partition, st))
    tagged = op.filter("only_m", op.map("unkey_parse", tagged, lambda kv: kv[1]), lambda t: t[0] == "m")
    groups = op.map("key_m", tagged, lambda t: (t[1], KeyGroup(t[1], *t[2])))
    found = op.stateful("model_windows", groups,
                        guarded("model_windows", lambda st: ModelWindowLogic(cfg, st, crosskey), outcome_dead_letters))
    found = op.map("unkey_alerts", found, lambda kv: kv[1])
    group_by = tuple(cfg.alerting.group_by)
    grouped = op.key_on("group_key", found, lambda a: group_key(a, group_by))
    out = op.stateful("incidents", grouped, guarded("incidents", lambda st: IncidentLogic(cfg.alerting, st)))
    op.output("alerts_out_0", op.map("unkey_incidents", out, lambda kv: kv[1]), TestingSink(alerts))
    return flow


def stored_step_ids(recovery_directory: Path) -> Set[str]:
    ids: Set[str] = set()
    for part in recovery_directory.glob("part-*.sqlite3"):
        with sqlite3.connect(part) as db:
            ids |= {row[0] for row in db.execute("SELECT DISTINCT step_id FROM snaps")}
    return ids


def snapshot_step_ids(flow: Dataflow) -> List[str]:
    """The ids a run of ``flow`` stores snapshots under: its inputs and its core stateful steps."""
    out: List[str] = []

    def walk(steps) -> None:
        for s in steps:
            if type(s).__name__ in ("input", "stateful_batch"):
                out.append(s.step_id)
            walk(s.substeps)

    walk(flow.substeps)
    return out


def test_a_store_of_the_op_stateful_wiring_resumes_in_the_operators(tmp_path):
    items = batches(steady(100, latency_fn=slow), size=300)
    whole = []
    run_main(flow_for(items, whole))

    init_db_dir(tmp_path, 1)
    rc = RecoveryConfig(str(tmp_path))
    cut = len(items) * 2 // 3  # the latency incident open, its baseline learned over the hour before
    crashed = items[:cut] + [TestingSource.ABORT()] + items[cut:]
    ck = str(tmp_path / "sentinel-cross-key-p0.pkl")
    first = []
    run_main(op_stateful_flow(crashed, first, CrossKey(ck)), epoch_interval=timedelta(0), recovery_config=rc)
    stored = stored_step_ids(tmp_path)
    assert {"sentinel.model_windows.stateful_batch", "sentinel.incidents.stateful_batch"} <= stored
    assert stored <= set(snapshot_step_ids(flow_for([], [])))

    second = []
    run_main(flow_for(crashed, second, CrossKey(ck)), epoch_interval=timedelta(0), recovery_config=rc)
    assert [(a.type, a.status) for a in first] == [("latency", "firing")]
    # The resumed keys still know their baselines, episodes and incident: the incident resolves.
    assert [a.status for a in second] == ["resolved"]
    ids = lambda xs: {(a.alert_id, a.status) for a in xs}  # noqa: E731
    assert ids(first) | ids(second) == ids(whole)


def test_the_flow_keeps_the_state_ids_of_recovery_stores():
    # Bytewax restores a key's state by the id it was stored under: renaming a step (or nesting its
    # state one level deeper) would start every key of an existing store afresh.
    cfg = config(detection={"forecast": {"enabled": True}, "coordinated_attack": {"enabled": True}},
                 policies={"allowed_models": {"svc": ["m"]}})
    flow = build_flow(cfg, source=TestingSource([]), alert_sinks=[TestingSink([])], dead_letter_sink=TestingSink([]))
    assert snapshot_step_ids(flow) == [
        "sentinel.input",
        "sentinel.parse.stateful_batch",
        "sentinel.model_windows.stateful_batch",
        "sentinel.actor_windows.stateful_batch",
        "sentinel.attack_counter.stateful_batch",
        "sentinel.forecast.stateful_batch",
        "sentinel.budgets.stateful_batch",
        "sentinel.incidents.stateful_batch",
    ]
