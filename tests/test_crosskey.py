"""Cross-key references (the parents' noise levels) survive a restart."""

import logging
import json

import pytest

from detectors.priors import ParentPriors
from sentinel import crosskey


@pytest.fixture(autouse=True)
def fresh(monkeypatch):
    monkeypatch.setattr(crosskey, "PRIORS", ParentPriors())
    yield
    crosskey.configure(None)


def test_saved_references_are_restored_on_the_next_start(tmp_path):
    path = str(tmp_path / "ck.json")
    crosskey.configure(path)
    crosskey.PRIORS.observe("svc/a", [("service", "svc"), ("fleet",)], "latency_p95_ms", 0.2)
    crosskey.PRIORS.observe("svc/b", [("service", "svc"), ("fleet",)], "latency_p95_ms", 0.4)
    crosskey.save()

    # A new process: empty references, then configure() loads the file.
    crosskey.PRIORS = ParentPriors()
    crosskey.configure(path)
    assert round(crosskey.PRIORS.scale([("service", "svc")], "latency_p95_ms"), 2) == 0.3
    crosskey.PRIORS.observe("svc/c", [("fleet",)], "ttft_p95_ms", 0.1)  # the lock came back too


def test_saves_are_throttled_and_atomic(tmp_path):
    path = tmp_path / "ck.json"
    crosskey.configure(str(path), interval=3600)
    crosskey.maybe_save()  # the first snapshot saves
    assert len(json.loads(path.read_bytes())["priors"]["scales"]) == 0
    crosskey.PRIORS.observe("svc/a", [("fleet",)], "latency_p95_ms", 0.2)
    crosskey.maybe_save()  # not due yet
    assert len(json.loads(path.read_bytes())["priors"]["scales"]) == 0
    crosskey.configure(str(path), interval=0)  # loads the file: the unsaved observation is gone
    assert len(crosskey.PRIORS) == 0
    crosskey.PRIORS.observe("svc/a", [("fleet",)], "latency_p95_ms", 0.2)
    crosskey.maybe_save()
    data = json.loads(path.read_bytes())
    assert data["format"] == crosskey.FORMAT and len(data["priors"]["scales"]) > 0
    assert [p.name for p in tmp_path.iterdir()] == ["ck.json"]


def test_a_torn_file_is_a_fresh_start_not_an_error(tmp_path, caplog):
    path = tmp_path / "ck.json"
    path.write_bytes(b"\x80\x05garbage")
    with caplog.at_level(logging.WARNING, logger="sentinel.crosskey"):
        crosskey.configure(str(path))
    assert len(crosskey.PRIORS) == 0
    assert "cannot read" in caplog.text


def test_recovery_directory_holds_one_file_per_process(tmp_path):
    from sentinel.config import load_config_dict
    from sentinel.runtime import prepare

    cfg = load_config_dict({"source": {"kind": "file", "path": "unused"}, "metrics": {"port": 0}})
    prepare(cfg, 3, str(tmp_path))
    assert crosskey.path() == str(tmp_path / "sentinel-cross-key-p3.json")
    cfg = load_config_dict({"source": {"kind": "file", "path": "unused"}, "metrics": {"port": 0},
                            "state": {"cross_key_file": str(tmp_path / "x-{process}.pkl")}})
    prepare(cfg, 1, None)
    assert crosskey.path() == str(tmp_path / "x-1.pkl")
