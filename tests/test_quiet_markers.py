"""A source partition's quiet marker, from the parse step to the windowed keys it fed."""

from __future__ import annotations

import orjson
from bytewax.operators import StatefulLogic

from operators.actors import ActorLogic
from operators.forecast import ForecastLogic
from operators.model_windows import ModelWindowLogic
from operators.parse import ACTOR, MODEL, SECURITY, ParseLogic, parser_for
from sentinel.config import load_config_dict
from sentinel.crosskey import CrossKey
from sentinel.events import KEY_SEP, LLMEvent, RawBatch, RawRecords
from tests.helpers import T0


def config(**extra):
    return load_config_dict({"source": {"kind": "file", "path": "unused"}, "metrics": {"port": 0}, **extra})


def raw(part: str, events, at: float = 5.0) -> RawBatch:
    values = [orjson.dumps(e) for e in events]
    return RawBatch(part, RawRecords("t", 0, values, list(range(len(values)))), at, 2)


def request(ts: float, service: str, model: str = "m1", user: str = "u1"):
    return {"timestamp": ts, "service": service, "model": model, "latency_ms": 500.0, "input_tokens": 10,
            "output_tokens": 5, "user_id": user}


def test_the_marker_reaches_every_windowed_key_the_partition_fed_and_only_once():
    cfg = config()
    logic = ParseLogic(parser_for(cfg), cfg.windows.idle_partition, None)
    events = [request(T0 + i, "a") for i in range(5)] + [request(T0 + i, "b", "m2") for i in range(5)]
    events.append({"timestamp": T0 + 6, "event_type": "security", "source": "1.2.3.4", "kind": "jailbreak",
                   "service": "a", "severity": "high"})
    out, _ = logic.on_item(raw("t[0]", events))
    assert {(t[0], t[1]) for t in out if t[0] != SECURITY} == {
        (MODEL, "a" + KEY_SEP + "m1"), (MODEL, "b" + KEY_SEP + "m2"), (ACTOR, "a"), (ACTOR, "b")}
    marks, _ = logic.on_item(RawBatch.quiet("t[0]", 9.0, 2))
    assert sorted((t[0], t[1], t[2]) for t in marks) == sorted([
        (MODEL, "a" + KEY_SEP + "m1", ("t[0]", None, 9.0, 2)), (MODEL, "b" + KEY_SEP + "m2", ("t[0]", None, 9.0, 2)),
        (ACTOR, "a", ("t[0]", None, 9.0, 2)), (ACTOR, "b", ("t[0]", None, 9.0, 2))])  # no security source
    assert logic.on_item(RawBatch.quiet("t[0]", 10.0, 2))[0] == []  # nothing fed since


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _calls(start: float, n: int, step: float = 1.0):
    return [LLMEvent(start + i * step, "svc", "m1", latency_ms=800.0, input_tokens=100, output_tokens=50,
                     user_id="u1") for i in range(n)]


def test_model_actor_and_forecast_windows_wait_for_a_silent_partition_and_not_for_a_quiet_one():
    cfg = config(detection={"forecast": {"enabled": True}})
    key = "svc" + KEY_SEP + "m1"
    clock = Clock()
    steps = [ModelWindowLogic(cfg, None, CrossKey(), clock), ActorLogic(cfg, None, clock),
             ForecastLogic(cfg, None, now=lambda: T0, clock=clock)]
    for logic in steps:
        k = "svc" if isinstance(logic, ActorLogic) else key
        logic.on_item((k, "B", _calls(T0, 5), 5.0, 2))  # B's last events for this key
        clock.now += 20.0
        logic.on_item((k, "A", _calls(T0, 600, 30.0), 6.0, 2))  # A runs hours ahead
        clock.now += 20.0
        logic.on_notify()
        before = logic.state.windows.open_count
        assert before > 290  # B is silent, maybe delayed: the windows after its time wait
        out, keep = logic.on_item((k, "B", None, 7.0, 2))  # B's source: all read
        assert keep == StatefulLogic.RETAIN
        assert logic.state.windows.open_count < 2  # A's windows close, up to A's own time
        clock.now = 100.0
    from sentinel.metrics import get_metrics

    gauge = get_metrics().keys_active
    before = {k: gauge.labels(kind=k)._value.get() for k in ("model", "service_actors")}
    fresh = ModelWindowLogic(cfg, None, CrossKey(), clock)
    assert fresh.on_item((key, "B", None, 7.0, 2)) == ([], StatefulLogic.DISCARD)  # no state for a marker
    fresh_actors = ActorLogic(cfg, None, clock)
    assert fresh_actors.on_item(("svc", "B", None, 7.0, 2)) == ([], StatefulLogic.DISCARD)
    assert {k: gauge.labels(kind=k)._value.get() for k in before} == before  # no key counted for it


def test_a_partition_clock_from_before_the_markers_loads_with_no_keys_fed():
    from operators.parse import PartitionClock

    c = PartitionClock.__new__(PartitionClock)
    c.__setstate__((T0, 5.0, [], 0, "t[0]", 2))  # the six fields an older snapshot holds
    assert (c.wm, c.partition, c.fed) == (T0, "t[0]", {})
