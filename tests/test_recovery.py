"""Recovery: the flow's per-key state (windows, baselines, episodes, incidents) survives a crash.

Bytewax snapshots every key's logic at epoch ends; after an abort the flow
resumes from the last snapshot and the source replays from its offset. The
alerts of an interrupted run and its resumption must be those of an
uninterrupted run (an alert emitted again from the replayed epoch carries the
same alert_id, so consumers see it once).
"""

from datetime import timedelta

from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSink, TestingSource, run_main

from flows import build_flow
from sentinel.crosskey import CrossKey
from sentinel.config import load_config_dict
from tests.helpers import T0, batches, steady


def flow_for(items, alerts, crosskey=None):
    cfg = load_config_dict({"source": {"kind": "file", "path": "unused"}, "metrics": {"port": 0}})
    return build_flow(cfg, source=TestingSource(items), alert_sinks=[TestingSink(alerts)],
                      dead_letter_sink=TestingSink([]), crosskey=crosskey)


def test_abort_and_resume_gives_the_same_alerts(tmp_path):
    def slow(ts, lat):
        return lat * 5 if T0 + 60 * 60 <= ts < T0 + 72 * 60 else lat

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
