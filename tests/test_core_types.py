"""The shared alert type (sentinel/core/types.py): SPEC section 2 JSON in and out, pickles, severities, times."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import orjson
import pytest

from operators.alerts import make_alert, resolved
from sentinel.core.times import iso, parse_iso, to_epoch
from sentinel.core.types import (ALERT_FIELDS, HIGH_SEVERITIES, LOW_SEVERITIES, SEVERITIES, SEVERITY_RANK, Alert,
                                 KeyGroup, Severity)
from sinks.base import encode_alert

SPEC = Path(__file__).resolve().parents[2] / "shared" / "SPEC.md"  # the contract, beside the repository
T = 1_767_571_200.0  # 2026-01-05T00:00:00Z


def _alert(**kw) -> Alert:
    return make_alert("latency", "latency_p95_ms", 4000.0, 800.0, 0.97, kw.pop("severity", "high"), "robust", T,
                      "chat", "gpt-4o", evidence={"z": 9.1}, root_cause_hints=["provider slower"], now=T + 60, **kw)


def _spec_fields() -> list:
    """The field names of SPEC section 2's table, in its order."""
    text = SPEC.read_text(encoding="utf-8")
    section = text[text.index("## 2. Alerts out"):text.index("## 3.")]
    names = []
    for line in section.splitlines():
        if line.startswith("| `"):
            names += re.findall(r"`([a-z_]+)`", line.split("|")[1])
    return names


def test_the_json_has_the_spec_fields_in_the_spec_order():
    assert _spec_fields() == list(ALERT_FIELDS)
    assert list(_alert().to_json()) == list(ALERT_FIELDS)


def test_json_round_trip_and_what_the_sinks_write():
    a = _alert(ingested_at=T + 1)
    body = a.to_json()
    assert body["severity"] == "high" and type(body["severity"]) is str
    assert body["event_time"] == "2026-01-05T00:00:00Z" and body["detected_at"] == "2026-01-05T00:01:00Z"
    assert "ingested_at" not in body and "_ingested_at" not in body
    back = Alert.from_json(orjson.loads(encode_alert(a)))
    assert back == a.copy(ingested_at=None)
    assert orjson.loads(encode_alert(a)) == body
    # an older snapshot's dict: the ingest time under "_ingested_at"
    assert Alert.of(dict(body, _ingested_at=T + 1)) == a
    assert Alert.of(a) is a


def test_alerts_pickle_and_keep_their_types():
    a = _alert(ingested_at=T + 1)
    b = pickle.loads(pickle.dumps(a))
    assert b == a and b.severity is Severity.high and b.ingested_at == T + 1


def test_a_bad_severity_is_refused():
    with pytest.raises(ValueError):
        _alert(severity="urgent")
    with pytest.raises(ValueError):
        Alert.from_json(dict(_alert().to_json(), severity="urgent"))
    with pytest.raises(KeyError):
        Alert.from_json({"severity": "high"})


def test_severities_order_and_mix_with_strings():
    assert SEVERITIES == ("info", "low", "medium", "high", "critical")
    assert [s.rank for s in SEVERITIES] == [0, 1, 2, 3, 4]
    assert SEVERITY_RANK["critical"] == 4 and Severity.rank_of("medium") == 2 and Severity.rank_of(None) == 0
    assert {"high": 1}[Severity.high] == 1 and Severity.high in {"high"} and f"{Severity.low}" == "low"
    assert set(HIGH_SEVERITIES) | set(LOW_SEVERITIES) == set(SEVERITIES)
    assert not set(HIGH_SEVERITIES) & set(LOW_SEVERITIES)


def test_resolve_keeps_the_episode_and_drops_the_ingest_time():
    a = _alert(ingested_at=T + 1)
    r = resolved(a, T + 600)
    assert (r.status, r.fingerprint, r.event_time) == ("resolved", a.fingerprint, a.event_time)
    assert r.alert_id != a.alert_id and r.ingested_at is None
    assert r.evidence["fired_event_time"] == iso(T + 600) and "fired_event_time" not in a.evidence
    assert r.fired_ts == T + 600 and r.event_ts == T
    # the same from an older snapshot's dict
    assert resolved(dict(a.to_json(), _ingested_at=T + 1), T + 600).alert_id == r.alert_id


def test_one_time_format_and_parse():
    assert iso(T) == "2026-01-05T00:00:00Z" and iso(T + 0.25) == "2026-01-05T00:00:00.250000Z"
    assert to_epoch("2026-01-05T00:00:00Z") == T == to_epoch("2026-01-05T01:00:00+01:00")
    assert to_epoch(iso(T + 0.123456)) == pytest.approx(T + 0.123456, abs=1e-6)
    assert parse_iso("2026-01-05T00:00:00Z").utcoffset().total_seconds() == 0
    with pytest.raises(ValueError):
        to_epoch("yesterday")


def test_a_key_group_is_a_named_tuple():
    g = KeyGroup("svc\x1fm1", "p0", ["e1"], T, 3)
    key, part, events, at, n = g
    assert (key, part, events, at, n) == ("svc\x1fm1", "p0", ["e1"], T, 3) and g.ingested_at == T
    assert g[2] == ["e1"] and g[:4] == ("svc\x1fm1", "p0", ["e1"], T)
    assert pickle.loads(pickle.dumps(g)) == g
