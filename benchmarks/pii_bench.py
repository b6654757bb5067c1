"""The cost of masking what leaves the flow (sentinel/pii.py).

    python benchmarks/pii_bench.py [N]

Times :class:`sentinel.pii.Masker` on what it is applied to: an alert as the
sinks get it (summary, evidence, hints, three similar incidents), with and
without a pseudonym key, with and without personal data in it; a dead-letter
record of a bad line carrying an e-mail, a card and an API key; a log line.
Then the same alert through the sink's encoding alone (orjson, CloudEvents
envelope), for scale. With ``--presidio PYTHON`` it also times Presidio's
pattern recognizers (credit card, e-mail, IBAN, IP, phone, run in another
interpreter that has presidio-analyzer installed) on the same texts.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from typing import Any, Callable, Dict

from operators.alerts import make_alert
from sentinel.pii import Masker
from sinks.base import encode_alert

KEY = b"benchmark-pseudonym-key-0123456789"


def alert(with_pii: bool) -> Dict[str, Any]:
    subject = "user:jane.doe@corp.example" if with_pii else "user:u0050"
    a = make_alert(
        "token_abuse", "tokens_per_horizon", 912_345, 40_000, 0.998, "high", "actor_tokens", 1.7676e9,
        "code-assist", "gpt-4o", subject=subject,
        evidence={"ratio": 22.8, "heavy_users_tokens": 40000, "own_usual_tokens": 3100, "horizon_seconds": 600,
                  "requests_in_horizon": 412, "busy_windows_in_horizon": 10, "window_seconds": 60,
                  "windows_abusive": 4, "fired_event_time": "2026-01-05T10:04:00Z",
                  "grouped": [{"type": "cost", "model": "gpt-4o", "observed": 0.12, "expected": 0.01}]},
        summary=f"{subject} used 912,345 tokens in 10 minutes on code-assist (412 requests, mostly gpt-4o): "
                "22.8x what the service's heavy users send, 294.3x its own usual 3,100.",
        root_cause_hints=["Mostly one model: gpt-4o (97% of the tokens).",
                          "Output tokens per request x9 against the service's usual.",
                          "Requests from 198.51.100.23 carry a key sk-proj-AbCdEfGhIjKlMnOpQr12" if with_pii
                          else "The user's requests come from one region: eu-west-1."],
        now=1.7676e9 + 30,
    )
    a.similar_incidents = [{"alert_id": "%032x" % i, "fingerprint": "%016x" % i, "type": "token_abuse",
                            "service": "code-assist", "model": "gpt-4o", "score": 0.97,
                            "event_time": "2026-01-04T10:00:00Z",
                            "summary": "anon:0123456789abcdef used 500,000 tokens in 10 minutes."}
                           for i in range(3)]
    return a.to_json()  # the masker works on the JSON object a sink writes


DEAD_LETTER = {
    "reason": "bad_json", "detail": "not JSON: unexpected end of data: line 1 column 412 (char 411)",
    "source": "llm.telemetry", "partition": 3, "offset": 1234567, "received_at": "2026-01-05T10:00:00+00:00",
    "raw": json.dumps({"timestamp": "2026-01-05T10:00:00Z", "service": "support-bot", "model": "gpt-4o",
                       "latency_ms": 2301.4, "input_tokens": 1850, "output_tokens": 131, "user_id": "u0070",
                       "tenant_id": "t001", "source_ip": "198.51.100.156",
                       "attributes": {"email": "jane.doe@corp.example", "card": "4111 1111 1111 1111",
                                      "prompt": "my key is sk-proj-AbCdEfGhIjKlMnOpQr12, call +44 20 7946 0958"}})[:-5],
}
LOG_LINE = "rabbitmq sink: publish failed (connection reset), retrying in 2.0 s; 412 alerts spooled"


def per_call(fn: Callable[[], Any], n: int) -> float:
    fn()
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - t) / n)
    return best * 1e6


PRESIDIO = r"""
import sys, time, json
from presidio_analyzer.predefined_recognizers import (CreditCardRecognizer, EmailRecognizer, IbanRecognizer,
                                                      IpRecognizer, PhoneRecognizer)
texts = json.loads(sys.stdin.read())
recs = [CreditCardRecognizer(), EmailRecognizer(), IbanRecognizer(), IpRecognizer(), PhoneRecognizer()]
ents = ["CREDIT_CARD", "EMAIL_ADDRESS", "IBAN_CODE", "IP_ADDRESS", "PHONE_NUMBER"]
n = int(sys.argv[1])
out = {}
for name, text in texts.items():
    def run():
        return [r for rec in recs for r in rec.analyze(text, ents, None)]
    run()
    t = time.perf_counter()
    for _ in range(n):
        run()
    out[name] = (time.perf_counter() - t) / n * 1e6
    out[name + "_found"] = sorted({r.entity_type for r in run()})
print(json.dumps(out))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("n", nargs="?", type=int, default=5000)
    ap.add_argument("--presidio", metavar="PYTHON", help="an interpreter with presidio-analyzer installed")
    args = ap.parse_args()
    n = args.n
    plain, keyed = Masker(), Masker(pseudonym_key=KEY)
    clean, dirty = alert(False), alert(True)
    rows = [
        ("alert, no personal data, no key", per_call(lambda: plain.alert(clean), n)),
        ("alert, no personal data, pseudonym key", per_call(lambda: keyed.alert(clean), n)),
        ("alert with an e-mail actor, an IP and a key, pseudonym key", per_call(lambda: keyed.alert(dirty), n)),
        ("encoding the same alert (CloudEvents, orjson), for scale",
         per_call(lambda: encode_alert(clean, "cloudevents"), n)),
        ("dead letter (412-byte raw with an e-mail, a card, a key, a phone)",
         per_call(lambda: plain.dead_letter(DEAD_LETTER), n)),
        ("log line (no personal data)", per_call(lambda: plain.text(LOG_LINE), n)),
    ]
    print("| what | microseconds per call |")
    print("|---|---|")
    for what, us in rows:
        print(f"| {what} | {us:.1f} |")
    if args.presidio:
        texts = {"summary": dirty["summary"] + " " + " ".join(dirty["root_cause_hints"]),
                 "dead letter raw": DEAD_LETTER["raw"], "log line": LOG_LINE}
        proc = subprocess.run([args.presidio, "-c", PRESIDIO, str(max(50, n // 50))], input=json.dumps(texts),
                              capture_output=True, text=True, check=True)
        got = json.loads(proc.stdout.strip().splitlines()[-1])
        print()
        print("| text | Presidio pattern recognizers (us) | found | sentinel.pii Masker.text (us) |")
        print("|---|---|---|---|")
        for name, text in texts.items():
            ours = per_call(lambda t=text: plain.text(t), n)
            print(f"| {name} ({len(text)} chars) | {got[name]:.0f} | {', '.join(got[name + '_found']) or '-'} "
                  f"| {ours:.1f} |")


if __name__ == "__main__":
    sys.path.insert(0, ".")
    main()
