"""The control and feedback topics refuse what could blind or silence the flow, and count every refusal."""

from __future__ import annotations

import hashlib
import hmac
import logging
import time

import orjson
import pytest

from operators.silences import Controls, SilenceRule
from sentinel.control import ControlHandler, apply_control
from sentinel.core.types import Alert
from sentinel.metrics import get_metrics

ALERT = Alert.from_json({"alert_id": "a-1", "fingerprint": "fp-1", "service": "search", "model": "m",
                         "type": "latency", "metric": "latency_p95_ms", "observed": 300.0, "expected": 100.0,
                         "severity": "high", "event_time": "2026-01-05T10:30:00Z", "status": "firing"})


def silence(**kw):
    msg = {"action": "silence", "id": "s-1", "matchers": {"service": "search"},
           "start": "2026-01-05T10:00:00Z", "end": "2026-01-05T12:00:00Z"}
    msg.update(kw)
    return {k: v for k, v in msg.items() if v is not None}


def refused(topic, reason):
    return get_metrics().control_refused.labels(topic=topic, reason=reason)._value.get()


@pytest.mark.parametrize("msg", [
    silence(matchers={}),
    silence(matchers={"service": ""}),
    silence(matchers={"service": ["search"]}),
    silence(end=None),                                    # no end: it would mute for good
    silence(start=None),
    silence(end="2026-01-05T09:00:00Z"),                  # end before start
    silence(end="2026-01-05T10:00:00Z"),                  # empty
    silence(end="2026-03-05T10:00:00Z"),                  # two months: over the 7-day default
    silence(end=float("nan")),
    silence(end=1e308),
])
def test_a_silence_from_the_topic_needs_matchers_an_end_after_its_start_and_a_bounded_length(msg):
    c = Controls()
    with pytest.raises(ValueError):
        apply_control(msg, c)
    assert c.silenced_by(ALERT) is None


def test_a_severity_silence_without_an_end_mutes_nothing():
    c = Controls()
    with pytest.raises(ValueError):
        apply_control({"action": "silence", "matchers": {"severity": "high"}}, c)
    assert c.silenced_by(ALERT) is None


def test_a_valid_silence_applies_and_its_length_is_configurable():
    c = Controls()
    apply_control(silence(), c)
    assert c.silenced_by(ALERT) is not None
    long = silence(id="s-2", end="2026-01-25T10:00:00Z")
    with pytest.raises(ValueError):
        apply_control(long, c)
    apply_control(long, c, max_silence=30 * 86400)


def test_flow_file_silences_cannot_be_expired_or_replaced_from_the_topic():
    c = Controls()
    c.add_silence(SilenceRule("flow-0", {"service": "search"}, None, None, "from the flow file"), origin="flow")
    with pytest.raises(ValueError):
        apply_control({"action": "expire", "id": "flow-0"}, c)
    with pytest.raises(ValueError):
        apply_control(silence(id="flow-0", matchers={"service": "other"}), c)
    assert c.silenced_by(ALERT).id == "flow-0"


def test_silences_are_capped():
    c = Controls(max_silences=10)
    for i in range(10):
        apply_control(silence(id=f"s-{i}"), c)
    with pytest.raises(ValueError):
        apply_control(silence(id="one-too-many"), c)
    apply_control(silence(id="s-3", comment="replacing one is fine"), c)


def test_a_hundred_thousand_silences_do_not_slow_the_alert_check():
    c = Controls(max_silences=200_000)
    for i in range(100_000):
        c.add_silence(SilenceRule(f"s-{i}", {"service": f"svc-{i}", "type": "latency"}, 0.0, 2e9))
    c.add_silence(SilenceRule("sev", {"severity": "critical"}, 0.0, 2e9))
    alerts = [ALERT.copy(service=f"other-{i}") for i in range(500)]
    t0 = time.perf_counter()
    for a in alerts:
        assert c.silenced_by(a) is None
    per_check = (time.perf_counter() - t0) / len(alerts)
    assert per_check < 0.0005, per_check
    assert c.silenced_by(ALERT.copy(service="svc-777")).id == "s-777"
    assert c.silenced_by(ALERT.copy(severity="critical")).id == "sev"


def test_feedback_takes_the_alerts_values_from_the_flows_own_record():
    c = Controls()
    forged = {"alert_id": "never-raised", "label": "false_positive", "service": "search", "model": "m",
              "type": "latency", "metric": "latency_p95_ms", "observed": 1e308, "expected": 1.0}
    assert not c.add_feedback(forged)
    assert c.dismissed_by(ALERT.copy(observed=1e8)) is None  # a 1,000,000x rise still pages

    c.remember(ALERT)
    # The message's own observed value is ignored: the pattern is the alert's (x3).
    assert c.add_feedback({"alert_id": "a-1", "label": "false_positive", "observed": 1e308, "expected": 1.0})
    assert c.dismissed_by(ALERT.copy(observed=320.0)) is not None
    assert c.dismissed_by(ALERT.copy(observed=1e8)) is None


def test_pending_feedback_is_capped():
    c = Controls(max_pending_feedback=1000)
    for i in range(200_000):
        c.add_feedback({"alert_id": f"unknown-{i}", "label": "false_positive"})
    assert c.pending_feedback() <= 1000


def test_repeated_feedback_does_not_grow_memory():
    c = Controls()
    c.remember(ALERT)
    for _ in range(10_000):
        c.add_feedback({"alert_id": "a-1", "label": "false_positive"})
    assert c.feedback_patterns() == 1


def sign(key: bytes, value: bytes) -> str:
    return "sha256=" + hmac.new(key, value, hashlib.sha256).hexdigest()


def test_signed_messages_are_required_when_a_key_is_configured(caplog):
    key = b"k" * 32
    c = Controls()
    h = ControlHandler(c, control_topic="ctl", feedback_topic="fb", key=key)
    value = orjson.dumps(silence())
    before = {r: refused("control", r) for r in ("unsigned", "bad_signature")}
    with caplog.at_level(logging.WARNING, logger="sentinel.control"):
        assert not h.handle("ctl", value, None, "ctl[0]@0")
        assert not h.handle("ctl", value, [("sentinel-signature", sign(b"x" * 32, value).encode())], "ctl[0]@1")
        # A signature over another message does not carry over.
        other = orjson.dumps(silence(matchers={"severity": "high"}))
        assert not h.handle("ctl", other, [("sentinel-signature", sign(key, value).encode())], "ctl[0]@2")
    assert c.silenced_by(ALERT) is None
    assert refused("control", "unsigned") == before["unsigned"] + 1
    assert refused("control", "bad_signature") == before["bad_signature"] + 2
    lines = [r for r in caplog.records if "refused" in r.getMessage()]
    assert len(lines) == 3 and all("\n" not in r.getMessage() and r.exc_info is None for r in lines)

    assert h.handle("ctl", value, [("sentinel-signature", sign(key, value).encode())], "ctl[0]@3")
    assert c.silenced_by(ALERT) is not None

    fb = orjson.dumps({"alert_id": "a-1", "label": "false_positive"})
    c.remember(ALERT)
    assert not h.handle("fb", fb, None, "fb[0]@0")
    assert c.dismissed_by(ALERT) is None
    assert h.handle("fb", fb, [("sentinel-signature", sign(key, fb))], "fb[0]@1")
    assert c.dismissed_by(ALERT) is not None


def test_without_a_key_unsigned_messages_are_accepted():
    c = Controls()
    h = ControlHandler(c, control_topic="ctl", feedback_topic="fb")
    assert h.handle("ctl", orjson.dumps(silence()), None, "ctl[0]@0")


@pytest.mark.parametrize("value,reason", [
    (b"not json", "not_json"),
    (b"[1, 2]", "invalid"),
    (orjson.dumps(silence(end=None)), "invalid"),
    (orjson.dumps({"action": "expire", "id": "nope"}), "unknown_silence"),
    (orjson.dumps({"action": "reboot"}), "invalid"),
])
def test_every_refused_control_message_is_counted_and_logged_in_one_line(value, reason, caplog):
    c = Controls()
    h = ControlHandler(c, control_topic="ctl", feedback_topic="fb")
    before = refused("control", reason)
    bad_control = get_metrics().dead_letters.labels(reason="bad_control")._value.get()
    with caplog.at_level(logging.WARNING, logger="sentinel.control"):
        assert not h.handle("ctl", value, None, "ctl[0]@7")
    assert refused("control", reason) == before + 1
    assert get_metrics().dead_letters.labels(reason="bad_control")._value.get() == bad_control + 1
    lines = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(lines) == 1 and "\n" not in lines[0] and "ctl[0]@7" in lines[0]


def test_pending_feedback_pushed_out_is_counted(caplog):
    c = Controls(max_pending_feedback=10)
    h = ControlHandler(c, control_topic="ctl", feedback_topic="fb")
    before = refused("feedback", "pending_full")
    for i in range(15):
        assert h.handle("fb", orjson.dumps({"alert_id": f"u-{i}", "label": "false_positive"}), None, f"fb[0]@{i}")
    assert refused("feedback", "pending_full") == before + 5
    assert c.pending_feedback() == 10


def test_with_a_key_only_the_flows_signed_alerts_are_read_back_from_the_alert_topic():
    from sinks.kafka import decode_record, encode_record

    key = b"k" * 32
    c = Controls()
    h = ControlHandler(c, control_topic="ctl", feedback_topic="fb", alerts_topic="alerts", key=key)
    planted = orjson.dumps(ALERT.copy(observed=1e308).to_json())
    assert not h.handle("alerts", planted, None, "alerts[0]@0")
    fb = orjson.dumps({"alert_id": "a-1", "label": "false_positive"})
    h.handle("fb", fb, [("sentinel-signature", sign(key, fb))], "fb[0]@0")
    assert c.dismissed_by(ALERT.copy(observed=1e8)) is None

    payload = orjson.dumps(ALERT.to_json())
    _, headers, _, body = decode_record(encode_record(ALERT, payload, key))
    assert h.handle("alerts", body, headers, "alerts[0]@1")
    assert c.dismissed_by(ALERT) is not None
