"""Redeploy with recovery: a changed flow definition takes effect on the restored keys, or is refused.

A first run snapshots its keys into a recovery store and stops at the end of
its input; a second run resumes from that store with the same or a changed
flow definition. Detection settings come from the current definition for
every restored key; a change the stored state cannot honour (the window
size) stops the start with one line and exit 2.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import orjson
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSink, TestingSource, run_main

from flows import build_flow
from sentinel import redeploy
from sentinel.config import load_config_dict
from sentinel.crosskey import CrossKey
from sentinel.metrics import get_metrics
from tests.helpers import T0, batches, steady

ROOT = Path(__file__).resolve().parents[1]
NO_LATENCY = ["tokens", "cost", "error_rate", "traffic", "drift"]


def _cfg(metrics=None):
    d = {"source": {"kind": "file", "path": "unused"}, "metrics": {"port": 0}}
    if metrics is not None:
        d["detection"] = {"metrics": metrics}
    return load_config_dict(d)


def _run(cfg, items, store: Path):
    alerts = []
    run_main(build_flow(cfg, source=TestingSource(items), alert_sinks=[TestingSink(alerts)],
                        dead_letter_sink=TestingSink([]), crosskey=CrossKey(str(store / "sentinel-cross-key-p0.json"))),
             epoch_interval=timedelta(0), recovery_config=RecoveryConfig(str(store)))
    return alerts


def _warming() -> float:
    return get_metrics().keys_warming.labels(kind="model")._value.get()


def test_a_restart_with_changed_detection_metrics_takes_effect_on_restored_keys(tmp_path):
    def slow(ts, lat):
        return lat * 5 if T0 + 150 * 60 <= ts < T0 + 165 * 60 else lat

    events = steady(190, latency_fn=slow)
    cut = next(i for i, e in enumerate(events) if e["timestamp"] >= T0 + 140 * 60)
    # The first run reads the calm part and ends; a resumed run reads on from there.
    items = batches(events[:cut], size=300) + [TestingSource.EOF()] + batches(events[cut:], size=300)

    first = tmp_path / "first"
    first.mkdir()
    init_db_dir(first, 1)
    assert _run(_cfg(), items, first) == []  # no incident yet: the baselines were learned quietly
    second = tmp_path / "second"
    shutil.copytree(first, second)

    same = _run(_cfg(), items, first)
    assert {a.type for a in same if a.status == "firing"} & {"latency", "ttft"}, same

    before = _warming()
    changed = _run(_cfg(NO_LATENCY), items, second)
    assert not [a for a in changed if a.type in ("latency", "ttft")], changed
    # The key was restored (warm), not started afresh (which would count as warming up).
    assert _warming() == before


def test_adopted_detectors_keep_what_the_new_settings_keep():
    from detectors.windowed import KeyDetectors
    from operators.windowing import KeyWindows

    cfg = _cfg(NO_LATENCY)
    old = KeyDetectors()
    old._windows = 77
    state = type("S", (), {})()
    state.key = "svc\x1fm1"
    state.detectors = old
    state.windows = KeyWindows(60.0, 1.0, 1.0, 5, dict)
    redeploy.refresh_model_state(cfg, state)
    det = state.detectors
    assert det is not old and det.types == tuple(NO_LATENCY) and det.windows_seen == 77
    assert not any(m.startswith(("latency", "ttft")) for m in det._base), det._base.keys()
    assert "latency" not in det._ep and "ttft" not in det._ep
    assert det._base["output_tokens_mean"] is old._base["output_tokens_mean"]  # learned state kept
    assert (state.windows.lateness, state.windows.idle_partition, state.windows.max_open) == (10.0, 10.0, 1440)

    unchanged = KeyDetectors(tuple(_cfg().detection.metrics))
    state.detectors = unchanged
    redeploy.refresh_model_state(_cfg(), state)
    assert state.detectors is unchanged  # same settings: nothing rebuilt


def _sentinel(*args):
    return subprocess.run([sys.executable, "-m", "sentinel.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=180)


def test_a_changed_window_size_is_refused_with_one_line_and_exit_2(tmp_path):
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in steady(5)))
    rec = tmp_path / "rec"
    rec.mkdir(mode=0o750)
    subprocess.run([sys.executable, "-m", "bytewax.recovery", str(rec), "1"], check=True, timeout=60,
                   capture_output=True)

    def flow(name, extra=""):
        p = tmp_path / f"{name}.yaml"
        p.write_text(f"source: {{kind: file, path: '{events}'}}\nsinks: []\nmetrics: {{port: 0}}\n{extra}")
        return str(p)

    first = flow("first")
    r = _sentinel("check", "-c", first, "--against", str(rec))
    assert r.returncode == 0 and "no flow settings stored" in r.stdout, r.stdout + r.stderr
    r = _sentinel("run", "-c", first, "-r", str(rec), "--progress", "0")
    assert r.returncode == 0, r.stderr
    assert redeploy.load(str(rec))["fixed"]["windows.size"] == 60.0
    r = _sentinel("check", "-c", first, "--against", str(rec))
    assert r.returncode == 0 and "no change to the restored keys" in r.stdout, r.stdout + r.stderr

    bigger = flow("bigger", "windows: {size: 5m}\n")
    r = _sentinel("check", "-c", bigger, "--against", str(rec))
    assert r.returncode == 2 and "windows.size: 60.0 in the recovery store, 300.0 in the flow" in r.stderr, r.stderr
    r = _sentinel("run", "-c", bigger, "-r", str(rec), "--progress", "0")
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "windows.size" in lines[0] and str(rec) in lines[0], r.stderr
    assert "Traceback" not in r.stderr

    latency_only = flow("latency", "detection: {metrics: [latency]}\n")
    r = _sentinel("check", "-c", latency_only, "--against", str(rec))
    assert r.returncode == 0, r.stderr
    assert 'takes effect on every restored key: detection.metrics: ["latency", "ttft"' in r.stdout, r.stdout
    r = _sentinel("run", "-c", latency_only, "-r", str(rec), "--progress", "0")
    assert r.returncode == 0, r.stderr
    assert "redeploy: detection.metrics" in r.stderr, r.stderr
    assert redeploy.load(str(rec))["applied"]["detection.metrics"] == ["latency"]


def test_a_redeploy_that_turns_drift_off_keeps_judging_the_tokens():
    # Drift watches metrics that tokens and cost judge too (output_tokens_mean, ...): its learned
    # CUSUMs must go with it, not stay behind under a judged metric's name.
    from detectors.windowed import KeyDetectors
    from sentinel.redeploy import adopt
    from tests.key_windows import key_windows

    ws = key_windows(seed=5, n=700)
    old = KeyDetectors()
    for w in ws[:600]:
        old.update(w)
    assert old._drifts.metrics
    fresh = adopt(KeyDetectors(("tokens", "cost", "error_rate", "traffic")), old)
    assert not fresh._drifts.metrics and not fresh._drifts._detectors
    found = [f for w in ws[600:] for f in fresh.update(w)]
    assert all(f.type != "drift" for f in found)
    assert fresh._base["output_tokens_mean"] is old._base["output_tokens_mean"]
