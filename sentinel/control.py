"""Run-time control from Kafka: silences (``sentinel.control``) and feedback (``llm.feedback``).

Every process reads both topics whole (all partitions, from the beginning,
no consumer group), so each knows every silence and every verdict whatever
worker its alerts come from. At start-up the listener catches up before the
flow starts; afterwards it follows the topics in a background thread.

Control messages (JSON)::

    {"action": "silence", "id": "maint-42", "matchers": {"service": "search-rag"},
     "start": "2026-01-05T10:00:00Z", "end": "2026-01-05T12:00:00Z",
     "comment": "provider maintenance", "created_by": "alice"}
    {"action": "expire", "id": "maint-42"}

Feedback messages (JSON)::

    {"alert_id": "...", "label": "false_positive", "reason": "load test", "who": "bob"}

(``fingerprint`` may stand for ``alert_id``; ``label`` is ``false_positive``
or ``true_positive``.) Feedback names an alert; the listener also reads the
flow's own Kafka alert topic, when it has one, so feedback on an alert of an
earlier run or of another process finds it. A message that cannot be used
is logged and counted in ``sentinel_dead_letters_total{reason="bad_control"}``.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime
from typing import Any, Dict, List, Optional

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from operators.silences import Controls, SilenceRule
from sentinel.metrics import get_metrics
from sources.kafka import consumer_config

log = logging.getLogger(__name__)


def _time(v: Any) -> Optional[float]:
    if v is None:
        return None
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v)
    if isinstance(v, str):
        dt = datetime.fromisoformat(v.replace("Z", "+00:00"))
        if dt.tzinfo is None:
            raise ValueError(f"time without UTC offset: {v!r}")
        return dt.timestamp()
    raise ValueError(f"not a time: {v!r}")


def apply_control(msg: Dict[str, Any], controls: Controls) -> None:
    action = msg.get("action")
    if action == "silence":
        matchers = msg.get("matchers")
        if not isinstance(matchers, dict) or not matchers:
            raise ValueError("silence needs a non-empty 'matchers' object")
        allowed = {"service", "model", "type", "severity", "subject", "metric"}
        bad = set(matchers) - allowed
        if bad:
            raise ValueError(f"unknown matcher(s) {sorted(bad)}; use {sorted(allowed)}")
        sid = str(msg.get("id") or orjson.dumps(matchers).decode())
        controls.add_silence(SilenceRule(sid, {k: str(v) for k, v in matchers.items()}, _time(msg.get("start")),
                                         _time(msg.get("end")), str(msg.get("comment", ""))))
    elif action == "expire":
        if not controls.expire_silence(str(msg.get("id"))):
            log.warning("control: expire of unknown silence %r", msg.get("id"))
    else:
        raise ValueError(f"unknown action {action!r} (silence | expire)")


def apply_alert(msg: Dict[str, Any], controls: Controls) -> None:
    """An alert this flow (or an earlier run of it) published: feedback may name it."""
    data = msg.get("data") if isinstance(msg.get("data"), dict) else msg
    if data.get("alert_id") and data.get("fingerprint") and data.get("status", "firing") != "resolved":
        controls.remember(data)


def apply_feedback(msg: Dict[str, Any], controls: Controls) -> None:
    if msg.get("label") not in ("false_positive", "true_positive"):
        raise ValueError("feedback 'label' must be 'false_positive' or 'true_positive'")
    if not (msg.get("alert_id") or msg.get("fingerprint")):
        raise ValueError("feedback needs 'alert_id' or 'fingerprint'")
    if not controls.add_feedback(msg):
        log.info("feedback for %s kept until that alert is seen", msg.get("alert_id") or msg.get("fingerprint"))


class ControlListener:
    def __init__(self, brokers: str, control_topic: Optional[str], feedback_topic: Optional[str],
                 controls: Controls, extra: Optional[Dict[str, Any]] = None,
                 alerts_topic: Optional[str] = None) -> None:
        self.controls = controls
        # Alerts first, so that feedback read in the same catch-up finds the alert it names.
        self.topics = {t: h for t, h in ((alerts_topic, apply_alert), (control_topic, apply_control),
                                        (feedback_topic, apply_feedback)) if t}
        self._consumer = Consumer(consumer_config(brokers, None, extra or {}))
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._bad = get_metrics().dead_letters.labels(reason="bad_control")

    def _assign(self) -> None:
        parts: List[TopicPartition] = []
        for topic in self.topics:
            md = self._consumer.list_topics(topic, timeout=15)
            t = md.topics.get(topic)
            if t is None or t.error is not None:
                log.info("control: topic %s not there yet (%s); it will be read once it exists",
                            topic, t.error if t is not None else "no metadata")
                continue
            parts.extend(TopicPartition(topic, p, OFFSET_BEGINNING) for p in sorted(t.partitions))
        self._consumer.assign(parts)

    def _handle(self, m) -> None:
        if m.error() is not None:
            return
        handler = self.topics.get(m.topic())
        try:
            msg = orjson.loads(m.value() or b"")
            if not isinstance(msg, dict):
                raise ValueError("expected a JSON object")
            handler(msg, self.controls)
        except Exception as ex:  # bad control input must never stop the flow
            self._bad.inc()
            log.warning("control: %s[%d]@%d unusable: %s", m.topic(), m.partition(), m.offset(), ex)

    def catch_up(self, idle_s: float = 1.0, max_s: float = 15.0) -> int:
        """Read what is there now (until the topics are quiet for ``idle_s``)."""
        self._assign()
        n = 0
        t0 = last = time.monotonic()
        while time.monotonic() - last < idle_s and time.monotonic() - t0 < max_s:
            msgs = self._consumer.consume(500, 0.1)
            for m in msgs:
                self._handle(m)
            if msgs:
                n += len(msgs)
                last = time.monotonic()
        log.info("control: %d message(s) read from %s", n, ", ".join(self.topics))
        return n

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="sentinel-control", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        reassign_at = time.monotonic() + 30.0
        while not self._stop.is_set():
            try:
                for m in self._consumer.consume(500, 0.5):
                    self._handle(m)
                if time.monotonic() >= reassign_at:
                    # Pick up control topics created (or partitions added) after start-up.
                    reassign_at = time.monotonic() + 30.0
                    have = {(tp.topic, tp.partition) for tp in self._consumer.assignment()}
                    for topic in self.topics:
                        md = self._consumer.list_topics(topic, timeout=5)
                        t = md.topics.get(topic)
                        if t is not None and t.error is None:
                            new = [TopicPartition(topic, p, OFFSET_BEGINNING) for p in t.partitions
                                   if (topic, p) not in have]
                            if new:
                                self._consumer.incremental_assign(new)
            except Exception as ex:
                log.warning("control listener: %s", ex)
                time.sleep(1.0)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self._consumer.close()
