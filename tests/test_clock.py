"""The stateful steps read wall time only through their injected clock.

Wall time decides what event time cannot: that a quiet key's last window is complete, that an idle
key's state may be dropped, how often a failing step logs. Each test drives a step with a fake clock
(seconds that move only when the test says so) and fails if the step reads any other clock: the real
monotonic clock barely moves during a test, so nothing would close or be evicted.
"""

from __future__ import annotations

import logging
import sys

from bytewax.operators import StatefulLogic
from bytewax.testing import TestingSink, TestingSource, run_main

from flows import build_flow
from operators.actors import ActorLogic
from operators.attacks import AttackLogic
from operators.forecast import ForecastLogic
from operators.guard import guarded
from operators.model_windows import ModelWindowLogic
from sentinel.config import load_config_dict
from sentinel.crosskey import CrossKey
from sentinel.events import KEY_SEP, LLMEvent, SecurityEvent
from tests.helpers import T0, batches, steady

KEY = f"svc{KEY_SEP}m1"
EVICT = 600.0  # state.key_idle_evict of these tests


class FakeClock:
    """Monotonic seconds that move only by ``advance``; remembers the modules that read it."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.readers = set()

    def __call__(self) -> float:
        self.readers.add(sys._getframe(1).f_globals["__name__"])
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def config(**extra):
    return load_config_dict({"source": {"kind": "file", "path": "unused"}, "metrics": {"port": 0},
                             "state": {"key_idle_evict": EVICT}, **extra})


def calls(n: int, start: float = T0 + 1.0, user: str = "u1"):
    return [LLMEvent(start + i, "svc", "m1", latency_ms=800.0 + i, input_tokens=100, output_tokens=50,
                     user_id=user) for i in range(n)]


def quiet_until_closed(cfg, last_ts: float) -> float:
    """Wall seconds after a key's last event before its window closes: the watermark moves with wall
    time once the key's partitions are idle, and has to pass the window's end plus the lateness."""
    w = cfg.windows
    window_end = T0 + w.size
    return w.idle_partition + (window_end - last_ts) + w.allowed_lateness


def test_a_quiet_model_keys_window_closes_and_its_state_goes_as_the_fake_clock_moves():
    cfg = config()
    clock = FakeClock()
    logic = ModelWindowLogic(cfg, None, CrossKey(), clock)
    evs = calls(30)
    logic.on_item((KEY, "p0", evs, 5.0, 1))
    wait = quiet_until_closed(cfg, evs[-1].ts)
    clock.advance(wait - 1.0)
    assert logic.on_notify()[1] == StatefulLogic.RETAIN
    assert logic.state.windows.open_count == 1  # not yet: the watermark is a second short
    clock.advance(2.0)
    assert logic.on_notify()[1] == StatefulLogic.RETAIN
    assert logic.state.windows.open_count == 0  # closed by wall time alone, no later event came
    clock.advance(EVICT - wait - 2.0)
    assert logic.on_notify()[1] == StatefulLogic.RETAIN  # idle a second short of key_idle_evict
    clock.advance(1.0)
    assert logic.on_notify()[1] == StatefulLogic.DISCARD


def test_a_quiet_forecast_keys_window_closes_as_the_fake_clock_moves():
    cfg = config(detection={"forecast": {"enabled": True}})
    clock = FakeClock()
    logic = ForecastLogic(cfg, None, now=lambda: T0, clock=clock)
    evs = calls(20)
    logic.on_item((KEY, "p0", evs, 5.0, 1))
    wait = quiet_until_closed(cfg, evs[-1].ts)
    clock.advance(wait - 1.0)
    logic.on_notify()
    assert logic.state.windows.open_count == 1
    clock.advance(2.0)
    assert logic.on_notify()[1] == StatefulLogic.RETAIN
    assert logic.state.windows.open_count == 0
    clock.advance(EVICT)
    assert logic.on_notify()[1] == StatefulLogic.DISCARD


def test_an_idle_services_actors_are_discarded_after_key_idle_evict_of_the_fake_clock():
    cfg = config()
    clock = FakeClock()
    logic = ActorLogic(cfg, None, clock)
    logic.on_item(("svc", "p0", calls(10), 5.0, 1))
    assert logic.state.windows.open_count == 1
    clock.advance(EVICT - 1.0)
    out, discard = logic.on_notify()
    assert discard == StatefulLogic.RETAIN
    assert logic.state.windows.open_count == 0  # its window closed on the way, by wall time
    clock.advance(1.0)
    assert logic.on_notify() == ([], StatefulLogic.DISCARD)


def test_an_idle_sources_open_attack_is_resolved_and_its_state_discarded_by_the_fake_clock():
    cfg = config()
    ac = cfg.detection.coordinated_attack
    clock = FakeClock()
    logic = AttackLogic(cfg, None, clock)
    events = [SecurityEvent(T0 + 20.0 * i, "203.0.113.9", "jailbreak", "chat", "m1")
              for i in range(ac.threshold + 1)]
    (firing,) = logic.on_item(("203.0.113.9", "p0", events, 5.0, 1))[0]
    assert firing.status == "firing"
    idle = min(EVICT, 2 * ac.window)
    clock.advance(idle - 1.0)
    assert logic.on_notify() == ([], StatefulLogic.RETAIN)
    clock.advance(1.0)
    (resolved,), discard = logic.on_notify()
    assert discard == StatefulLogic.DISCARD
    assert (resolved.status, resolved.fingerprint) == ("resolved", firing.fingerprint)


def test_a_failing_step_logs_once_a_minute_of_the_fake_clock(caplog):
    class Failing(StatefulLogic):
        def on_item(self, value):
            raise ValueError("bad")

        def snapshot(self):
            return None

    clock = FakeClock()
    logic = guarded("clock_test_failing", lambda _st: Failing(), clock=clock)(None)
    with caplog.at_level(logging.ERROR, logger="operators.guard"):
        for _ in range(3):
            logic.on_item(("k", "p0"))
        clock.advance(59.0)
        logic.on_item(("k", "p0"))
        assert len(caplog.records) == 1
        clock.advance(1.0)
        logic.on_item(("k", "p0"))
        assert len(caplog.records) == 2


def test_the_flow_gives_its_one_clock_to_every_stateful_step():
    cfg = config(detection={"forecast": {"enabled": True}})
    clock = FakeClock()
    flow = build_flow(cfg, source=TestingSource(batches(steady(3))), alert_sinks=[TestingSink([])],
                      dead_letter_sink=TestingSink([]), clock=clock)
    run_main(flow)
    # The steps that had items read it (attacks and incidents get none from steady traffic).
    assert {"operators.model_windows", "operators.actors", "operators.forecast"} <= clock.readers
