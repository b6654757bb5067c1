"""The Kafka benchmark's topic of several scenario families (benchmarks/kafka_throughput.py --family a,b)."""

from __future__ import annotations

import os
import sys

import orjson

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import kafka_throughput  # noqa: E402
import world  # noqa: E402


def _services(lines):
    return {e["service"] for e in map(orjson.loads, lines) if e.get("event_type") == "llm.request"}


def test_two_families_merge_in_time_order_with_their_services_kept_apart():
    one = kafka_throughput.family_events(3000, "saas-chat", 5, 1.0, world.DEFAULT_DATA_DIR)
    two = kafka_throughput.family_events(3000, "saas-chat,enterprise-mix", 5, 1.0, world.DEFAULT_DATA_DIR)
    assert len(two) == 3000
    stamps = [orjson.loads(line)["timestamp"] for line in two]
    assert stamps == sorted(stamps)
    services = _services(two)
    assert {s.split(".", 1)[0] for s in services} == {"saas-chat", "enterprise-mix"}
    # One family alone keeps its services' names; merged, each is prefixed by its family.
    assert {f"saas-chat.{s}" for s in _services(one)} >= {s for s in services if s.startswith("saas-chat.")}
    assert all(not s.startswith(("saas-chat.", "enterprise-mix.")) for s in _services(one))
