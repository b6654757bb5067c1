"""Cross-key references (the parents' noise levels) survive a restart, and are each flow's own."""

import logging
import json

from bytewax.testing import TestingSink, TestingSource, run_main

from flows import build_flow
from operators.silences import Controls, SilenceRule
from sentinel import crosskey
from sentinel.config import load_config_dict
from sentinel.crosskey import CrossKey
from sentinel.runtime import prepare
from tests.helpers import T0, batches, steady


def test_saved_references_are_restored_on_the_next_start(tmp_path):
    path = str(tmp_path / "ck.json")
    ck = CrossKey(path)
    ck.priors.observe("svc/a", [("service", "svc"), ("fleet",)], "latency_p95_ms", 0.2)
    ck.priors.observe("svc/b", [("service", "svc"), ("fleet",)], "latency_p95_ms", 0.4)
    ck.save()

    # A new process: its references are loaded from the file.
    again = CrossKey(path)
    assert round(again.priors.scale([("service", "svc")], "latency_p95_ms"), 2) == 0.3
    again.priors.observe("svc/c", [("fleet",)], "ttft_p95_ms", 0.1)  # the lock came back too


def test_saves_are_throttled_and_atomic(tmp_path):
    path = tmp_path / "ck.json"
    ck = CrossKey(str(path), interval=3600)
    ck.maybe_save()  # the first snapshot saves
    assert len(json.loads(path.read_bytes())["priors"]["scales"]) == 0
    ck.priors.observe("svc/a", [("fleet",)], "latency_p95_ms", 0.2)
    ck.maybe_save()  # not due yet
    assert len(json.loads(path.read_bytes())["priors"]["scales"]) == 0
    ck = CrossKey(str(path), interval=0)  # loads the file: the unsaved observation is gone
    assert len(ck.priors) == 0
    ck.priors.observe("svc/a", [("fleet",)], "latency_p95_ms", 0.2)
    ck.maybe_save()
    data = json.loads(path.read_bytes())
    assert data["format"] == crosskey.FORMAT and len(data["priors"]["scales"]) > 0
    assert [p.name for p in tmp_path.iterdir()] == ["ck.json"]


def test_without_a_path_nothing_is_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ck = CrossKey()
    ck.priors.observe("svc/a", [("fleet",)], "latency_p95_ms", 0.2)
    ck.maybe_save()
    ck.save()
    assert list(tmp_path.iterdir()) == []


def test_a_torn_file_is_a_fresh_start_not_an_error(tmp_path, caplog):
    path = tmp_path / "ck.json"
    path.write_bytes(b"\x80\x05garbage")
    with caplog.at_level(logging.WARNING, logger="sentinel.crosskey"):
        ck = CrossKey(str(path))
    assert len(ck.priors) == 0
    assert "cannot read" in caplog.text


def test_recovery_directory_holds_one_file_per_process(tmp_path):
    cfg = load_config_dict({"source": {"kind": "file", "path": "unused"}, "metrics": {"port": 0}})
    assert prepare(cfg, 3, str(tmp_path)).crosskey.path == str(tmp_path / "sentinel-cross-key-p3.json")
    cfg = load_config_dict({"source": {"kind": "file", "path": "unused"}, "metrics": {"port": 0},
                            "state": {"cross_key_file": str(tmp_path / "x-{process}.pkl")}})
    assert prepare(cfg, 1, None).crosskey.path == str(tmp_path / "x-1.pkl")


def _flow(cfg, alerts, controls=None, ck=None):
    def slow(ts, lat):
        return lat * 5 if T0 + 60 * 60 <= ts < T0 + 70 * 60 else lat

    evs = steady(90, latency_fn=slow) + [dict(e, service="other") for e in steady(90, seed=4)]
    items = batches(sorted(evs, key=lambda e: e["timestamp"]))
    return build_flow(cfg, source=TestingSource(items), alert_sinks=[TestingSink(alerts)],
                      dead_letter_sink=TestingSink([]), controls=controls, crosskey=ck)


def test_two_flows_in_one_process_share_no_references_and_no_silences():
    # Two flows built in one process: what one learns across its keys, and the silences one is given,
    # are not the other's.
    cfg = load_config_dict({"source": {"kind": "file", "path": "unused"}, "metrics": {"port": 0}})
    first_ck, first_controls = CrossKey(), Controls()
    first_controls.add_silence(SilenceRule("mute-all", {"service": "svc"}, None, None))
    first, second = [], []
    first_flow = _flow(cfg, first, first_controls, first_ck)
    second_ck, second_controls = CrossKey(), Controls()
    second_flow = _flow(cfg, second, second_controls, second_ck)
    run_main(first_flow)
    learned = first_ck.priors.__getstate__()
    assert len(first_ck.priors) > 0 and len(second_ck.priors) == 0
    assert not [a for a in first if a.service == "svc"]  # silenced in the first flow
    run_main(second_flow)
    assert first_ck.priors.__getstate__() == learned  # the second flow's keys fed their own
    assert len(second_ck.priors) > 0
    pages = [a for a in second if a.service == "svc" and a.status == "firing"]
    assert pages and second_controls.silenced_by(pages[0]) is None  # not silenced in the second
    # A flow built without them makes its own.
    third = []
    run_main(_flow(cfg, third))
    assert [(a.type, a.status) for a in third] == [(a.type, a.status) for a in second]
    assert first_ck.priors.__getstate__() == learned and first_controls.silenced_by(pages[0]) is not None
