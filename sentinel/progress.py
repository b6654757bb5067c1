"""What ``sentinel run`` tells the person at the terminal: progress lines while it runs, a summary at the end.

Both read the process's own metrics (:mod:`sentinel.metrics`), so they cost
the flow nothing and say what /metrics would say.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timezone
from typing import Dict

from sentinel.config import FlowConfig
from sentinel.metrics import Metrics, get_metrics

log = logging.getLogger("sentinel")


def by_label(metric, label: str) -> Dict[str, float]:
    """A counter's or gauge's values summed by one label (``_total`` samples only for counters)."""
    out: Dict[str, float] = {}
    for fam in metric.collect():
        for s in fam.samples:
            if fam.type == "counter" and not s.name.endswith("_total"):
                continue
            k = s.labels.get(label, "")
            out[k] = out.get(k, 0.0) + s.value
    return out


def total(metric) -> float:
    return sum(by_label(metric, "").values())


def _n(x: float) -> str:
    return f"{x:,.0f}"


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:.0f} s"


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Reporter:
    """A progress line every ``interval`` seconds on stderr (through the log): events, rate, lag, alerts."""

    def __init__(self, interval: float, metrics: Metrics = None) -> None:
        self.interval = interval
        self.m = metrics or get_metrics()
        self._stop = threading.Event()
        self._thread = None
        self._last = (time.monotonic(), total(self.m.events))

    def start(self) -> None:
        if self.interval > 0:
            self._thread = threading.Thread(target=self._run, name="sentinel-progress", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            log.info("%s", self.line())

    def line(self) -> str:
        m = self.m
        now, events = time.monotonic(), total(m.events)
        t, e = self._last
        self._last = (now, events)
        rate = (events - e) / max(now - t, 1e-9)
        parts = [f"progress: {_n(events)} events read ({_n(rate)}/s)"]
        if m.clock.newest:
            parts.append(f"event time {_iso(m.clock.newest)}")
        lag = by_label(m.kafka_consumer_lag, "topic")
        if lag:
            parts.append(f"consumer lag {_n(sum(lag.values()))} messages")
        elif m.clock.newest:
            behind = max(0.0, time.time() - m.clock.newest)
            parts.append(f"{behind:,.1f}s behind the wall clock" if behind < 3600 else "replaying")
        parts.append(f"{_n(total(m.anomalies))} anomalies so far")
        return ", ".join(parts)


def summary_lines(cfg: FlowConfig, seconds: float, m: Metrics = None) -> list:
    """The end-of-run summary: events by outcome, dead letters, alerts by type, late events, duration; a warm-up note."""
    m = m or get_metrics()
    outcomes = by_label(m.events, "outcome")
    events = sum(outcomes.values())
    lines = [f"summary: {_n(events)} events in {seconds:.1f}s ({_n(events / max(seconds, 1e-9))}/s): "
             + ", ".join(f"{_n(v)} {k.replace('_', ' ')}" for k, v in sorted(outcomes.items(), key=lambda kv: -kv[1])
                         if v) if events else f"summary: no events in {seconds:.1f}s"]
    dead = {k: v for k, v in by_label(m.dead_letters, "reason").items() if v}
    lines.append(f"summary: {_n(sum(dead.values()))} dead letters"
                 + (" (" + ", ".join(f"{k} {_n(v)}" for k, v in sorted(dead.items())) + ")" if dead else ""))
    types = {k: v for k, v in by_label(m.anomalies, "type").items() if v}
    sinks = {k: v for k, v in by_label(m.alerts_published, "sink").items() if v}
    lines.append(f"summary: {_n(sum(types.values()))} anomalies"
                 + (" (" + ", ".join(f"{k} {_n(v)}" for k, v in sorted(types.items(), key=lambda kv: -kv[1])) + ")"
                    if types else "")
                 + f", {_n(total(m.alerts_suppressed))} suppressed (grouped, silenced), alerts published: "
                 + (", ".join(f"{k} {_n(v)}" for k, v in sorted(sinks.items())) if sinks else "none")
                 + f"; {_n(outcomes.get('late', 0))} late events")
    d, w = cfg.detection, cfg.windows
    warmup = (d.warmup_windows + d.cold_windows) * w.size
    span = m.clock.newest - m.clock.first if m.clock.newest else 0.0
    warming = total(m.keys_warming)
    if events and span < warmup:
        lines.append(f"note: the input spans {_duration(span)} of event time, less than a key's warm-up of "
                     f"{_duration(warmup)} (detection.warmup_windows {d.warmup_windows} + cold_windows "
                     f"{d.cold_windows} windows of {w.size:g}s): few or no alerts are to be expected")
    elif warming:
        lines.append(f"note: {_n(warming)} of {_n(by_label(m.keys_active, 'kind').get('model', 0))} service/model "
                     f"keys were still warming up at the end (a key alerts after {d.warmup_windows} windows)")
    return lines


def summary(cfg: FlowConfig, seconds: float) -> None:
    for line in summary_lines(cfg, seconds):
        log.info("%s", line)
