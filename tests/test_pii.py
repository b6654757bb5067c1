"""Masking of personal data and secrets (sentinel/pii.py): unit and property tests."""

import base64
import json
import logging
import os
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from operators.alerts import make_alert
from sentinel.config import ConfigError, load_config_dict
from sentinel.pii import CARD, EMAIL, IBAN, IP, PHONE, SECRET, LogFilter, Masker, iban_ok, luhn_ok, masker_for
from sinks.base import AlertSink, Writer

KEY = b"0123456789abcdef-test-key"


def alert_json(*args, **kw):
    """An alert's SPEC section 2 object (what the masker sees at a sink)."""
    return make_alert(*args, **kw).to_json()


def luhn_complete(body: str) -> str:
    """``body`` plus the check digit that makes it pass Luhn."""
    for d in "0123456789":
        if luhn_ok(body + d):
            return body + d
    raise AssertionError


def test_each_kind_is_masked():
    m = Masker()
    cases = {
        "write to jane.doe+llm@mail.example.co.uk please": EMAIL,
        "call +44 20 7946 0958 now": PHONE,
        "call (415) 555-2671 now": PHONE,
        "call 415-555-2671 now": PHONE,
        "card 4111 1111 1111 1111 expires": CARD,
        "card 5500-0000-0000-0004 expires": CARD,
        "card 378282246310005 (amex)": CARD,
        "iban GB82 WEST 1234 5698 7654 32 ok": IBAN,
        "iban DE89370400440532013000 ok": IBAN,
        "key sk-proj-AbCdEfGhIjKlMnOpQrStUv123 leaked": SECRET,
        "Authorization: Bearer eyJhbGciOi.abc-DEF_ghi": SECRET,
        "aws AKIAIOSFODNN7EXAMPLE here": SECRET,
        "from 203.0.113.9 again": IP,
        "from 2001:db8::8a2e:370:7334 again": IP,
    }
    for text, token in cases.items():
        out = m.text(text)
        assert token in out, (text, out)


def test_checksums_decide_cards_and_ibans():
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    assert iban_ok("GB82 WEST 1234 5698 7654 32") and not iban_ok("GB83 WEST 1234 5698 7654 32")
    m = Masker()
    assert m.text("order 4111111111111112 shipped") == "order 4111111111111112 shipped"
    assert m.text("ref GB83WEST12345698765432") == "ref GB83WEST12345698765432"


def test_what_is_not_personal_is_left_alone():
    m = Masker()
    for text in ("Latency of search-rag/gpt-4o is 3,200 ms, above its usual 800 ms.",
                 "2026-01-05T10:00:00Z", "cost per request $0.004512, x4.2", "model claude-sonnet-4-20250514",
                 "1767607200.123", "listening on 127.0.0.1:9464", "bound to ::1 and 0.0.0.0",
                 "12345678 tokens in 10 minutes", "10:00:00", "v1.2.3", "user:u0050"):
        assert m.text(text) == text


def test_kinds_can_be_turned_off():
    m = Masker(ips=False, emails=False)
    assert m.text("a@b.example from 10.2.3.4") == "a@b.example from 10.2.3.4"
    assert Masker().text("a@b.example from 10.2.3.4") == "<email> from <ip>"


# -- alerts ----------------------------------------------------------------------

names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-_/0123456789", min_size=1, max_size=24)
numbers = st.floats(min_value=0, max_value=1e7, allow_nan=False)


@st.composite
def plain_alerts(draw):
    typ = draw(st.sampled_from(["latency", "ttft", "tokens", "cost", "error_rate", "traffic", "drift"]))
    return alert_json(typ, "latency_p95_ms", draw(numbers), draw(numbers), draw(st.floats(0, 1)),
                      draw(st.sampled_from(["info", "low", "medium", "high", "critical"])), "robust_z",
                      draw(st.floats(1.7e9, 1.9e9)), draw(names), draw(names),
                      evidence={"windows": draw(st.integers(0, 1000)), "error_types": {draw(names): 0.5}},
                      root_cause_hints=[draw(names)], now=1.8e9)


@settings(max_examples=200, deadline=None)
@given(plain_alerts())
def test_alerts_without_personal_data_are_unchanged(alert):
    assert Masker().alert(alert) == alert
    assert Masker(pseudonym_key=KEY).alert(alert) == alert


def _emails():
    local = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789._", min_size=1, max_size=12)
    local = local.filter(lambda s: s[0] not in "._" and s[-1] not in "._")
    host = st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=2, max_size=10)
    return st.builds(lambda a, b, c: f"{a}@{b}.{c}", local, host, st.sampled_from(["com", "org", "example", "io"]))


def _cards():
    return st.builds(lambda p, rest: luhn_complete(p + rest), st.sampled_from(["4", "51", "37", "6011"]),
                     st.text(alphabet="0123456789", min_size=11, max_size=14)).filter(lambda s: len(set(s)) > 1)


def _ibans():
    def make(country, bban):
        for check in range(100):
            s = f"{country}{check:02d}{bban}"
            if iban_ok(s):
                return s
        raise AssertionError

    return st.builds(make, st.sampled_from(["DE", "GB", "FR", "NL"]),
                     st.text(alphabet="0123456789ABCDEFGHIJ", min_size=14, max_size=22))


def _ipv4():
    return st.builds(lambda a, b, c, d: f"{a}.{b}.{c}.{d}", st.integers(1, 126), st.integers(0, 255),
                     st.integers(0, 255), st.integers(1, 254))


def _secrets():
    tail = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789", min_size=20,
                   max_size=40)
    upper = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", min_size=16, max_size=16)
    return st.one_of(st.builds(lambda t: "sk-" + t, tail), st.builds(lambda t: "sk-proj-" + t, tail),
                     st.builds(lambda t: "Bearer " + t, tail), st.builds(lambda t: "AKIA" + t, upper))


def _phones():
    return st.one_of(
        st.builds(lambda a, b, c: f"+{a} {b} {c}", st.integers(1, 99), st.integers(10, 9999),
                  st.integers(100000, 9999999)),
        st.builds(lambda a, b, c: f"({a}) {b}-{c:04d}", st.integers(200, 999), st.integers(200, 999),
                  st.integers(0, 9999)),
        st.builds(lambda a, b, c: f"{a}-{b}-{c:04d}", st.integers(200, 999), st.integers(200, 999),
                  st.integers(0, 9999)))


pii_values = st.one_of(_emails(), _cards(), _ibans(), _ipv4(), _secrets(), _phones())
fillers = st.sampled_from(["", " ", "user ", "contact: ", "(", "see ", "x=", "\n", "\"", "'"])


@settings(max_examples=300, deadline=None)
@given(pii_values, fillers, fillers, plain_alerts(), st.sampled_from(["summary", "hint", "evidence", "subject"]))
def test_masked_alerts_never_carry_planted_pii(secret, before, after, alert, where):
    text = before + secret + after
    if where == "summary":
        alert["summary"] = alert["summary"] + " " + text
    elif where == "hint":
        alert["root_cause_hints"].append(text)
    elif where == "evidence":
        alert["evidence"]["detail"] = {"note": [text]}
    else:
        alert["subject"] = secret
        alert["summary"] = f"{secret} used 50,000 tokens in 10 minutes."
    for m in (Masker(), Masker(pseudonym_key=KEY)):
        out = m.alert(alert)
        if where == "subject" and m is not None and out["subject"] == secret:
            # Without a key the actor is what an operator acts on: kept as it is, and only it.
            assert "<" not in out["summary"].split(" used")[0]
            out = {**out, "subject": None, "summary": out["summary"].replace(secret, "")}
        assert secret not in json.dumps(out), (secret, out)
    keyed = Masker(pseudonym_key=KEY).alert(alert)
    assert secret not in json.dumps(keyed)


def test_pseudonyms_replace_the_actor_everywhere_and_are_keyed():
    a = alert_json("token_abuse", "tokens_per_horizon", 90000, 8000, 0.99, "high", "actor_tokens", 1.8e9,
                   "code-assist", "gpt-4o", subject="user:u0050",
                   evidence={"top": [{"user_id": "user:u0050", "tokens": 90000}]},
                   summary="user:u0050 used 90,000 tokens in 10 minutes on code-assist.")
    out = Masker(pseudonym_key=KEY).alert(a)
    p = Masker(pseudonym_key=KEY).pseudonym("user:u0050")
    assert out["subject"] == p and out["summary"].startswith(p + " used")
    assert out["evidence"]["top"][0]["user_id"] == p
    assert out["fingerprint"] == a["fingerprint"] and out["alert_id"] == a["alert_id"]
    assert "u0050" not in json.dumps(out)
    assert Masker(pseudonym_key=b"another-key-0123456789").pseudonym("user:u0050") != p
    # Without a key the id is kept (it is masked only where it is itself personal data).
    assert Masker().alert(a)["subject"] == "user:u0050"


def test_pseudonyms_are_stable_across_processes():
    code = ("import sys; from sentinel.pii import Masker; "
            "print(Masker(pseudonym_key=sys.argv[1].encode()).pseudonym('tenant:acme'))")
    outs = {subprocess.run([sys.executable, "-c", code, KEY.decode()], capture_output=True, text=True,
                           check=True, env={**os.environ, "PYTHONHASHSEED": str(seed)}).stdout.strip()
            for seed in (1, 2)}
    assert outs == {Masker(pseudonym_key=KEY).pseudonym("tenant:acme")}


def test_dead_letters_are_masked_unless_originals_are_kept():
    rec = {"reason": "invalid_json", "detail": "bad value 'bob@x.example'", "source": "f", "partition": 0,
           "offset": 1, "received_at": "2026-01-05T00:00:00+00:00",
           "raw": '{"user_id": "bob@x.example", "card": "4111111111111111"'}
    m = Masker()
    out = m.dead_letter(rec)
    assert "bob@x.example" not in json.dumps(out) and "4111111111111111" not in out["raw"]
    assert out["reason"] == "invalid_json" and out["offset"] == 1
    assert m.dead_letter(rec, keep_original=True) == rec
    raw = b"\xff\xfe caf\xe9 bob@x.example 4111111111111111 \x00"
    binary = dict(rec, raw_base64=base64.b64encode(raw).decode())
    del binary["raw"]
    out = m.dead_letter(binary)
    assert base64.b64decode(out["raw_base64"]) == b"\xff\xfe caf\xe9 <email> <card> \x00" and out["raw_masked"]
    clean = dict(binary, detail="invalid UTF-8", raw_base64=base64.b64encode(b"\xff\xfe caf\xe9").decode())
    assert m.dead_letter(clean) == clean


# -- configuration -------------------------------------------------------------


def test_privacy_config_and_key(monkeypatch, tmp_path):
    base = {"source": {"kind": "simulator"}}
    cfg = load_config_dict(base)
    assert cfg.privacy.enabled and masker_for(cfg.privacy) is not None
    assert masker_for(load_config_dict({**base, "privacy": {"enabled": False}}).privacy) is None
    with pytest.raises(ConfigError, match="privacy.mask_ip"):
        load_config_dict({**base, "privacy": {"mask_ip": True}})
    with pytest.raises(ConfigError, match="not both"):
        load_config_dict({**base, "privacy": {"pseudonym_key_env": "K", "pseudonym_key_file": "/k"}})
    cfg = load_config_dict({**base, "privacy": {"pseudonym_key_env": "SENTINEL_TEST_PSEUDONYM_KEY"}})
    monkeypatch.delenv("SENTINEL_TEST_PSEUDONYM_KEY", raising=False)
    with pytest.raises(ValueError, match="SENTINEL_TEST_PSEUDONYM_KEY is not set"):
        masker_for(cfg.privacy)
    monkeypatch.setenv("SENTINEL_TEST_PSEUDONYM_KEY", "short")
    with pytest.raises(ValueError, match="at least 16 bytes"):
        masker_for(cfg.privacy)
    monkeypatch.setenv("SENTINEL_TEST_PSEUDONYM_KEY", KEY.decode())
    assert masker_for(cfg.privacy).pseudonym("x") == Masker(pseudonym_key=KEY).pseudonym("x")
    kf = tmp_path / "key"
    kf.write_bytes(KEY + b"\n")
    cfg = load_config_dict({**base, "privacy": {"pseudonym_key_file": str(kf)}})
    assert masker_for(cfg.privacy).pseudonym("x") == Masker(pseudonym_key=KEY).pseudonym("x")


# -- the sink hook and log lines --------------------------------------------------


class _Collect(Writer):
    kind = "test"

    def __init__(self, out):
        self.out = out

    def write(self, alerts, payloads):
        self.out.extend(zip(alerts, payloads))


def test_alert_sink_masks_what_it_writes_and_encodes():
    out = []
    a = make_alert("coordinated_attack", "security_events", 40, 10, 0.99, "critical", "security_rate", 1.8e9,
                   "doc-summarizer", None, subject="mallory@evil.example",
                   summary="40 security events from mallory@evil.example within 5 minutes.", ingested_at=7.0)
    part = AlertSink(lambda i, n: _Collect(out), "cloudevents", masker=Masker(pseudonym_key=KEY)).build("s", 0, 1)
    part.write_batch([a])
    (alert, payload), = out
    assert b"mallory" not in payload and "mallory" not in json.dumps(alert.to_json())
    assert alert.subject.startswith("anon:") and json.loads(payload)["subject"] == alert.subject
    assert alert.ingested_at == 7.0  # the detection latency still starts at the ingest
    assert a.subject == "mallory@evil.example"  # the flow's own copy is not touched


def test_log_filter_masks_messages_and_tracebacks():
    logger = logging.getLogger("sentinel.test_pii")
    records = []

    class H(logging.Handler):
        def emit(self, record):
            records.append(self.format(record))

    h = H()
    h.addFilter(LogFilter())
    logger.addHandler(h)
    try:
        logger.warning("user %s from %s", "eve@corp.example", "198.51.100.7")
        try:
            raise ValueError("token sk-abcdefghijklmnopqrstuvwxyz")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(h)
    text = "\n".join(records)
    assert "eve@corp.example" not in text and "198.51.100.7" not in text and "sk-abc" not in text
    assert "user <email> from <ip>" in text and "ValueError: token <secret>" in text


def test_setup_logging_installs_the_filter():
    code = ("import logging; from sentinel.runtime import setup_logging; setup_logging(); "
            "logging.getLogger('sentinel.x').warning('card 4111 1111 1111 1111 of ann@a.example')")
    err = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stderr
    assert "card <card> of <email>" in err and "4111" not in err


def test_subjects_that_name_no_one_are_kept():
    for subject in ("budget:cost_usd/1d", "model:gpt-4o"):
        a = alert_json("policy_violation", "budget_cost_usd_1d", 50, 40, 1.0, "high", "budget", 1.8e9, "svc", None,
                       subject=subject, summary="The daily cost budget of svc ($40.00) is spent.")
        assert Masker(pseudonym_key=KEY).alert(a) == a


def test_pseudonyms_are_never_taken_for_cards_or_phones():
    m = Masker(pseudonym_key=b"audit-test-key-0123456789")
    p = m.pseudonym("203.0.113.170")
    assert p == "anon:43826653424090a6"  # 14 digits in a row that pass the Luhn check
    a = alert_json("coordinated_attack", "security_events", 40, 10, 0.99, "high", "security_rate", 1.8e9, "svc",
                   None, subject="203.0.113.170", summary="40 security events from 203.0.113.170 within 5 minutes.")
    out = m.alert(a)
    assert out["subject"] == p and out["summary"] == f"40 security events from {p} within 5 minutes."
    assert m.text(f"{p} and 4111 1111 1111 1111") == f"{p} and <card>"
