"""The control listener's catch-up at start-up: it reads what the control topics hold, and does not wait when they
hold nothing."""

from __future__ import annotations

import time

from confluent_kafka import Producer

from sentinel.control import ControlListener, Controls


def _listener(brokers: str, control: str, feedback: str) -> ControlListener:
    return ControlListener(brokers, control, feedback, Controls())


def test_catch_up_does_not_wait_for_topics_that_are_not_there_or_empty(tansu, kafka_topic):
    for control, feedback in (("absent.control.x1", "absent.feedback.x1"), (kafka_topic(), kafka_topic())):
        listener = _listener(tansu, control, feedback)
        try:
            t0 = time.monotonic()
            assert listener.catch_up(idle_s=2.0) == 0
            assert time.monotonic() - t0 < 1.5  # the quiet wait would take 2 s
        finally:
            listener.stop()


def test_catch_up_reads_what_a_control_topic_holds(tansu, kafka_topic):
    control, feedback = kafka_topic(), kafka_topic()
    p = Producer({"bootstrap.servers": tansu})
    p.produce(control, b"{}")
    p.produce(control, b"{}")
    assert p.flush(15) == 0
    listener = _listener(tansu, control, feedback)
    try:
        assert listener.catch_up(idle_s=0.5) == 2
    finally:
        listener.stop()
