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

A silence may also (or only) carry Alertmanager-style matchers that are not
plain equality: ``"match": [{"name": "model", "op": "=~", "value": "gpt-4.*"},
{"name": "severity", "op": "!=", "value": "critical"}]`` (``op`` one of
``=``, ``!=``, ``=~``, ``!~``; a regular expression matches the whole value).

Feedback messages (JSON)::

    {"alert_id": "...", "label": "false_positive", "reason": "load test", "who": "bob"}

(``fingerprint`` may stand for ``alert_id``; ``label`` is ``false_positive``
or ``true_positive``.) Feedback names an alert; the listener also reads the
flow's own Kafka alert topic, when it has one, so feedback on an alert of an
earlier run or of another process finds it. What the feedback dismisses is
that alert as the flow recorded it: values in the message itself are ignored.

A silence from the topic needs at least one matcher, a ``start`` and an
``end`` after it, at most ``control.max_silence`` later; silences of the flow
definition can be neither expired nor replaced from the topic. With a key
(``control.hmac_key_env`` / ``hmac_key_file``) every control and feedback
message must carry the header ``sentinel-signature: sha256=<hex>``, the
HMAC-SHA256 of the message value under the key (:func:`sign`).

A message that is not applied is logged in one line (topic, partition,
offset, why) and counted in ``sentinel_control_refused_total{topic,reason}``
and ``sentinel_dead_letters_total{reason="bad_control"}``.
"""

from __future__ import annotations

import hmac
import logging
import math
import re
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from operators.silences import ControlRefused, Controls, SilenceRule
from sentinel.core.signing import MIN_KEY_BYTES, SIGNATURE_HEADER, load_key, sign  # noqa: F401 (public here too)
from sentinel.core.times import parse_iso
from sentinel.core.types import Alert
from sentinel.metrics import get_metrics
from sources.kafka import consumer_config

log = logging.getLogger(__name__)

MATCHERS = ("service", "model", "type", "severity", "subject", "metric")
MAX_SILENCE = 7 * 86400.0
_MAX_TEXT = 256


def _time(v: Any, name: str) -> float:
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        t = float(v)
    elif isinstance(v, str) and len(v) <= 64:
        try:
            dt = parse_iso(v)
        except ValueError:
            raise ControlRefused("invalid", f"{name!r} is not an RFC 3339 time: {v[:64]!r}") from None
        if dt.tzinfo is None:
            raise ControlRefused("invalid", f"{name!r} has no UTC offset: {v!r}")
        t = dt.timestamp()
    else:
        raise ControlRefused("invalid", f"{name!r} must be an RFC 3339 time or epoch seconds")
    if not math.isfinite(t) or abs(t) > 1e11:
        raise ControlRefused("invalid", f"{name!r} is out of range")
    return t


def _text(v: Any, name: str) -> str:
    if not isinstance(v, str) or not v or len(v) > _MAX_TEXT:
        raise ControlRefused("invalid", f"{name} must be a non-empty string of at most {_MAX_TEXT} characters")
    return v


MATCH_OPS = ("=", "!=", "=~", "!~")


def _matchers(matchers: Any, match: Any) -> Tuple[Dict[str, str], Tuple[Tuple[str, str, Any], ...]]:
    """A silence's equality matchers and its other ones (``match``), checked; at least one in all."""
    if not isinstance(matchers, dict) or not isinstance(match, list) or len(match) > 32:
        raise ControlRefused("invalid", "silence 'matchers' must be an object and 'match' a list of at most 32")
    if not matchers and not match:
        raise ControlRefused("invalid", "silence needs a non-empty 'matchers' object (or 'match' list)")
    bad = set(matchers) - set(MATCHERS)
    if bad:
        raise ControlRefused("invalid", f"unknown matcher(s) {sorted(map(str, bad))[:6]}; use {list(MATCHERS)}")
    eq = {k: _text(v, f"matchers.{k}") for k, v in matchers.items()}
    others = []
    for i, m in enumerate(match):
        if not isinstance(m, dict) or m.get("name") not in MATCHERS or m.get("op") not in MATCH_OPS:
            raise ControlRefused("invalid", f"match[{i}] needs 'name' in {list(MATCHERS)} and 'op' in "
                                 f"{list(MATCH_OPS)}")
        value = m.get("value")
        if not isinstance(value, str) or len(value) > _MAX_TEXT:
            raise ControlRefused("invalid", f"match[{i}].value must be a string of at most {_MAX_TEXT} characters")
        if m["op"] == "=":
            if m["name"] in eq and eq[m["name"]] != value:
                raise ControlRefused("invalid", f"match[{i}] contradicts matchers.{m['name']}")
            eq[m["name"]] = _text(value, f"match[{i}].value")
        elif m["op"] == "!=":
            others.append((m["name"], "!=", value))
        else:
            try:
                others.append((m["name"], m["op"], re.compile(value)))
            except re.error as ex:
                raise ControlRefused("invalid", f"match[{i}].value is not a regular expression: {ex}") from None
    return eq, tuple(others)


def apply_control(msg: Dict[str, Any], controls: Controls, max_silence: float = MAX_SILENCE) -> None:
    """Apply one control message; raises :class:`ControlRefused` (a ``ValueError``) when it is refused."""
    action = msg.get("action")
    if action == "silence":
        matchers = msg.get("matchers", {})
        matchers, others = _matchers(matchers, msg.get("match", []))
        if "start" not in msg or "end" not in msg:
            raise ControlRefused("invalid", "silence needs 'start' and 'end'")
        start, end = _time(msg["start"], "start"), _time(msg["end"], "end")
        if end <= start:
            raise ControlRefused("invalid", "silence 'end' must be after its 'start'")
        if end - start > max_silence:
            raise ControlRefused("too_long", f"silence of {(end - start) / 3600:.1f}h is longer than "
                                 f"control.max_silence ({max_silence / 3600:.1f}h)")
        sid = _text(msg["id"], "id") if "id" in msg else orjson.dumps(
            [matchers, msg["match"]] if others else matchers, option=orjson.OPT_SORT_KEYS).decode()
        comment = msg.get("comment", "")
        controls.add_silence(SilenceRule(sid, matchers, start, end, str(comment)[:1024], others=others),
                             origin="topic")
    elif action == "expire":
        sid = _text(msg.get("id"), "id")
        if not controls.expire_silence(sid, from_topic=True):
            raise ControlRefused("unknown_silence", f"expire of unknown silence {sid!r}")
    else:
        raise ControlRefused("invalid", f"unknown action {str(action)[:64]!r} (silence | expire)")


def apply_alert(msg: Dict[str, Any], controls: Controls) -> None:
    """An alert this flow (or an earlier run of it) published: feedback may name it."""
    data = msg.get("data") if isinstance(msg.get("data"), dict) else msg
    if data.get("alert_id") and data.get("fingerprint") and data.get("status", "firing") != "resolved":
        try:
            alert = Alert.from_json(data)
        except (KeyError, TypeError, ValueError):
            raise ControlRefused("invalid", "not a SPEC section 2 alert") from None
        controls.remember(alert)


def apply_feedback(msg: Dict[str, Any], controls: Controls) -> int:
    """Apply one feedback message; returns how many waiting ones it pushed out (``max_pending_feedback``)."""
    if msg.get("label") not in ("false_positive", "true_positive"):
        raise ControlRefused("invalid", "feedback 'label' must be 'false_positive' or 'true_positive'")
    ref = msg.get("alert_id") or msg.get("fingerprint")
    _text(ref, "feedback 'alert_id' (or 'fingerprint')")
    applied, dropped = controls.add_feedback_counted(msg)
    if not applied:
        log.info("feedback for %s kept until that alert is seen", ref)
    return dropped


class ControlHandler:
    """One message of the control, feedback or alert topic: verify, decode, apply, or refuse and count."""

    def __init__(self, controls: Controls, control_topic: Optional[str] = None, feedback_topic: Optional[str] = None,
                 alerts_topic: Optional[str] = None, key: Optional[bytes] = None,
                 max_silence: float = MAX_SILENCE) -> None:
        self.controls = controls
        self.key = key
        self.max_silence = max_silence
        # Alerts first, so that feedback read in the same catch-up finds the alert it names.
        self.topics: Dict[str, Tuple[str, Callable[[Dict[str, Any]], Any]]] = {}
        if alerts_topic:
            self.topics[alerts_topic] = ("alerts", lambda m: apply_alert(m, controls))
        if control_topic:
            self.topics[control_topic] = ("control", lambda m: apply_control(m, controls, max_silence))
        if feedback_topic:
            self.topics[feedback_topic] = ("feedback", self._feedback)
        m = get_metrics()
        self._bad = m.dead_letters.labels(reason="bad_control")
        self._refused = m.control_refused
        self._where = ""

    def _feedback(self, msg: Dict[str, Any]) -> None:
        dropped = apply_feedback(msg, self.controls)
        for _ in range(dropped):
            self._refuse("feedback", "pending_full", f"{self._where}: oldest feedback waiting for its alert dropped "
                         f"(control.max_pending_feedback = {self.controls.max_pending_feedback})")

    def _refuse(self, kind: str, reason: str, text: str) -> None:
        self._bad.inc()
        self._refused.labels(topic=kind, reason=reason).inc()
        log.warning("control: refused %s message %s", kind, text)

    def _verify(self, value: bytes, headers: Optional[Sequence[Tuple[str, Any]]]) -> None:
        if self.key is None:
            return
        got = [v for k, v in headers or () if k == SIGNATURE_HEADER]
        if not got or got[0] is None:
            raise ControlRefused("unsigned", f"has no {SIGNATURE_HEADER} header (control messages must be signed)")
        sig = got[0].decode("ascii", "replace") if isinstance(got[0], bytes) else str(got[0])
        if len(got) > 1 or not hmac.compare_digest(sig.encode(), sign(self.key, value).encode()):
            raise ControlRefused("bad_signature", f"{SIGNATURE_HEADER} does not match the message")

    def handle(self, topic: str, value: Optional[bytes], headers: Optional[Sequence[Tuple[str, Any]]],
               where: str) -> bool:
        """Apply one message; False when it was refused (logged in one line and counted)."""
        kind, apply = self.topics[topic]
        value = value or b""
        self._where = where
        try:
            self._verify(value, headers)  # with a key, the flow's Kafka alert sinks sign their alerts too
            try:
                msg = orjson.loads(value)
            except orjson.JSONDecodeError:
                raise ControlRefused("not_json", "is not JSON") from None
            if not isinstance(msg, dict):
                raise ControlRefused("invalid", "is not a JSON object")
            apply(msg)
            return True
        except ControlRefused as ex:
            if kind == "alerts" and ex.reason not in ("unsigned", "bad_signature"):
                return False  # not an alert feedback could name (another producer's record): nothing to apply
            self._refuse(kind, ex.reason, f"{where}: {ex}")
        except Exception as ex:  # bad control input must never stop the flow
            if kind == "alerts":
                return False
            self._refuse(kind, "invalid", f"{where}: {type(ex).__name__}: {str(ex)[:200]}")
        return False


class ControlListener:
    def __init__(self, brokers: str, control_topic: Optional[str], feedback_topic: Optional[str],
                 controls: Controls, extra: Optional[Dict[str, Any]] = None,
                 alerts_topic: Optional[str] = None, key: Optional[bytes] = None,
                 max_silence: float = MAX_SILENCE) -> None:
        self.controls = controls
        self.handler = ControlHandler(controls, control_topic, feedback_topic, alerts_topic, key, max_silence)
        self.topics = self.handler.topics
        self.config = consumer_config(brokers, None, extra or {})
        self._consumer = Consumer(self.config)
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def _assign(self) -> List[TopicPartition]:
        parts: List[TopicPartition] = []
        for topic in self.topics:
            try:
                md = self._consumer.list_topics(topic, timeout=15)
            except Exception as ex:  # the broker went away since the start-up check; the follower retries
                log.warning("control: no metadata for %s (%s); it will be read once there is", topic, ex)
                continue
            t = md.topics.get(topic)
            if t is None or t.error is not None:
                log.info("control: topic %s not there yet (%s); it will be read once it exists",
                            topic, t.error if t is not None else "no metadata")
                continue
            parts.extend(TopicPartition(topic, p, OFFSET_BEGINNING) for p in sorted(t.partitions))
        self._consumer.assign(parts)
        return parts

    def _empty(self, parts: List[TopicPartition]) -> bool:
        """Whether the broker says every one of ``parts`` holds no message now."""
        for tp in parts:
            try:
                low, high = self._consumer.get_watermark_offsets(tp, timeout=5)
            except Exception:  # not known: read, as if it held some
                return False
            if high > low:
                return False
        return True

    def _handle(self, m) -> None:
        if m.error() is not None:
            return
        if m.topic() in self.topics:
            self.handler.handle(m.topic(), m.value(), m.headers(), f"{m.topic()}[{m.partition()}]@{m.offset()}")

    def catch_up(self, idle_s: float = 1.0, max_s: float = 15.0) -> int:
        """Read what is there now (until the topics are quiet for ``idle_s``; at once when there is none
        of them yet, or none holds a message)."""
        parts = self._assign()
        if self._empty(parts):
            log.info("control: nothing to read yet from %s", ", ".join(self.topics))
            return 0
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
