"""A whole run whose telemetry carries personal data and secrets everywhere: none of it leaves.

Simulated telemetry (an attack from an IP, an attack from an e-mail address, a
latency incident) gets planted personal data in every attribute and actor
field, plus dead letters that carry it; ``sentinel run`` writes alerts to
stdout, a JSON-lines file, an on-disk Qdrant collection and the incident
store (SQLite), dead letters to a file and logs to stderr. Every byte of every output is searched for every
planted string.
"""

import ipaddress
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import base64
import functools

import pytest

from sentinel.pii import Masker
from simulator import Simulator

KEY = "test-pseudonym-key-0123456789"
ATTACK_EMAIL = "mallory.attacker@evil-corp.example"
ATTACK_IP = "203.0.113.77"


@functools.lru_cache(maxsize=None)
def planted(i: int):
    """Personal data for the i-th user: e-mail, phone, card (Luhn), IBAN, API key, bearer token, AWS key."""
    card = "4%014d" % (1000 + i)
    for d in "0123456789":
        total = 0
        for j, ch in enumerate(reversed(card + d)):
            v = int(ch) * (2 if j % 2 else 1)
            total += v - 9 if v > 9 else v
        if total % 10 == 0:
            card += d
            break
    bban = "37040044%010d" % (532013000 + i)
    iban = next(f"DE{c:02d}{bban}" for c in range(100) if int("".join(str(int(x, 36)) for x in bban + "DE" + f"{c:02d}")) % 97 == 1)
    return {
        "email": f"person.{i:04d}@mail-{i % 7}.example",
        "phone": f"+44 20 7946 {i:04d}",
        "card": card,
        "iban": iban,
        "api_key": "sk-proj-%026dAbCdEf" % i,
        "bearer": "Bearer tok%020dXyZ" % i,
        "aws": "AKIA%016d" % i,
    }


def make_events(path: Path):
    sim = Simulator(seed=5, hours=2.5, rate=10.0, incidents=[
        {"type": "coordinated_attack", "service": "doc-summarizer", "subject": ATTACK_IP,
         "start": "2026-01-05T01:10:00Z", "end": "2026-01-05T01:15:00Z"},
        {"type": "coordinated_attack", "service": "support-bot", "subject": ATTACK_EMAIL,
         "start": "2026-01-05T01:50:00Z", "end": "2026-01-05T01:55:00Z"},
        {"type": "latency", "service": "search-rag", "model": "gpt-4o-mini",
         "start": "2026-01-05T01:20:00Z", "end": "2026-01-05T01:40:00Z", "magnitude": 4},
    ])
    seeded = {ATTACK_EMAIL, ATTACK_IP}
    users = {}
    lines = []
    for n, ev in enumerate(sim.events()):
        uid = ev.get("user_id")
        if uid is not None:
            i = users.setdefault(uid, len(users))
            pii = planted(i)
            ev["user_id"] = pii["email"]
            ev["attributes"] = {"phone": pii["phone"], "payment": f"card {pii['card']}", "iban": pii["iban"],
                                "prompt": f"my key is {pii['api_key']}, header {pii['bearer']}, aws {pii['aws']}"}
            seeded.update(pii.values())
        if ev.get("source_ip"):
            seeded.add(ev["source_ip"])
        if ev.get("event_type") == "security":
            seeded.add(ev["source"])
            ev["detail"] = f"blocked prompt from {ev['source']}"
        lines.append(json.dumps(ev).encode())
        if n % 9000 == 4500:  # dead letters carrying the same data
            pii = planted(n)
            seeded.update(pii.values())
            lines.append(b'{"timestamp": "2026-01-05T00:30:00Z", "user_id": "%s", "note": "%s %s' % (
                pii["email"].encode(), pii["card"].encode(), pii["api_key"].encode()))
            lines.append(json.dumps({"timestamp": "2026-01-05T00:30:00Z", "service": "svc", "model": "m",
                                     "output_tokens": -5, "user_id": pii["email"],
                                     "attributes": {"iban": pii["iban"], "phone": pii["phone"]}}).encode())
            lines.append(b"\xff\xfe not utf-8 " + pii["bearer"].encode() + b" " + pii["aws"].encode())
    path.write_bytes(b"\n".join(lines) + b"\n")
    # Bare tokens would also show up inside masked text; the planted values are what must not.
    seeded = {s for s in seeded if s}
    return seeded


def test_no_planted_personal_data_leaves_the_flow(tmp_path):
    events = tmp_path / "events.jsonl"
    seeded = make_events(events)
    out = tmp_path / "out"
    out.mkdir()
    flow = tmp_path / "flow.yaml"
    flow.write_text(f"""
name: pii-run
source: {{kind: file, path: {events}}}
sinks:
  - {{kind: stdout}}
  - {{kind: jsonl, path: {out / 'alerts.jsonl'}}}
  - {{kind: qdrant, location: {out / 'qdrant'}, collection: incidents}}
  - {{kind: incident_store, url: {out / 'incidents.db'}, spool_dir: {out / 'store-spool'}}}
metrics: {{port: 0}}
dead_letters: {{kind: jsonl, path: {out / 'dlq.jsonl'}}}
privacy: {{pseudonym_key_env: SENTINEL_TEST_PSEUDONYM_KEY}}
""")
    env = {**os.environ, "SENTINEL_TEST_PSEUDONYM_KEY": KEY, "SENTINEL_LOG_LEVEL": "DEBUG"}
    proc = subprocess.run([sys.executable, "-m", "sentinel.cli", "run", "-c", str(flow)],
                          capture_output=True, env=env, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    (out / "stdout.txt").write_bytes(proc.stdout)
    (out / "stderr.txt").write_bytes(proc.stderr)

    outputs = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert any("qdrant" in str(p) for p in outputs) and (out / "incidents.db").stat().st_size > 0, sorted(outputs)
    for p, data in outputs.items():
        for s in seeded:
            assert s.encode() not in data, f"{s!r} in {p.relative_to(out)}"
        # No address of the input in any form (the loopback ones name no one).
        for ip in re.findall(rb"\b\d{1,3}(?:\.\d{1,3}){3}\b", data):
            try:
                assert ipaddress.ip_address(ip.decode()).is_loopback, (ip, p)
            except ValueError:
                pass

    # The run did what it should with what it may tell.
    alerts = [json.loads(line)["data"] for line in (out / "alerts.jsonl").read_text().splitlines()]
    attacks = [a for a in alerts if a["type"] == "coordinated_attack" and a["status"] == "firing"]
    m = Masker(pseudonym_key=KEY.encode())
    assert {a["subject"] for a in attacks} == {m.pseudonym(ATTACK_IP), m.pseudonym(ATTACK_EMAIL)}
    for a in attacks:
        assert a["subject"] in a["summary"]
    store = b"".join(data for p, data in outputs.items() if p.name.startswith("incidents.db"))
    assert m.pseudonym(ATTACK_IP).encode() in store  # the store has the attack, under its pseudonym
    assert any(a["type"] == "latency" and a["service"] == "search-rag" for a in alerts)
    stdout_alerts = [json.loads(line)["data"] for line in proc.stdout.decode().splitlines() if line.startswith("{")]
    assert [a["alert_id"] for a in stdout_alerts] == [a["alert_id"] for a in alerts]
    dlq = [json.loads(line) for line in (out / "dlq.jsonl").read_text().splitlines()]
    assert len(dlq) >= 9 and {d["reason"] for d in dlq} >= {"bad_json", "out_of_range"}
    assert any("<email>" in d.get("raw", "") and "<card>" in d.get("raw", "") for d in dlq)
    binary = [base64.b64decode(d["raw_base64"]) for d in dlq if "raw_base64" in d]
    assert binary and all(b.startswith(b"\xff\xfe not utf-8 <secret> <secret>") for b in binary), binary
    for b in binary:
        for s in seeded:
            assert s.encode() not in b


def test_original_dead_letters_only_when_configured(tmp_path):
    line = b'{"timestamp": "2026-01-05T00:00:00Z", "user_id": "ann@corp.example"'
    events = tmp_path / "events.jsonl"
    events.write_bytes(line + b"\n")
    for mode, expect in (("masked", False), ("original", True)):
        dlq = tmp_path / f"dlq-{mode}.jsonl"
        flow = tmp_path / "flow.yaml"
        flow.write_text(f"""
source: {{kind: file, path: {events}}}
sinks: []
metrics: {{port: 0}}
dead_letters: {{kind: jsonl, path: {dlq}}}
privacy: {{dead_letter_raw: {mode}}}
""")
        proc = subprocess.run([sys.executable, "-m", "sentinel.cli", "run", "-c", str(flow)], capture_output=True,
                              timeout=300, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr.decode()[-2000:]
        (rec,) = [json.loads(x) for x in dlq.read_text().splitlines()]
        assert (rec["raw"] == line.decode()) is expect
        assert ("ann@corp.example" in rec["raw"]) is expect


@pytest.mark.parametrize("env", [{}, {"SENTINEL_TEST_PSEUDONYM_KEY": "short"}])
def test_unusable_pseudonym_key_is_one_line(tmp_path, env):
    flow = tmp_path / "flow.yaml"
    flow.write_text("source: {kind: simulator, hours: 0.01}\nmetrics: {port: 0}\n"
                    "privacy: {pseudonym_key_env: SENTINEL_TEST_PSEUDONYM_KEY}\n")
    clean = {k: v for k, v in os.environ.items() if k != "SENTINEL_TEST_PSEUDONYM_KEY"}
    proc = subprocess.run([sys.executable, "-m", "sentinel.cli", "run", "-c", str(flow)], capture_output=True,
                          text=True, env={**clean, **env}, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert "privacy" in last and "Traceback" not in proc.stderr, proc.stderr
    assert "short" not in proc.stderr
