"""Score alerts (SPEC section 2) against the simulator's incident labels.

An alert matches a label when

* ``type`` is equal,
* the key is equal: ``service`` and ``model`` for key incidents; ``service``,
  ``model`` and ``subject`` for ``token_abuse``; ``subject`` only for
  ``coordinated_attack``,
* its ``event_time`` lies in ``[label.start - 60 s, label.end + grace]``
  (the 60 s allow for a one-minute window that opens before the incident;
  ``grace`` is ``grace_s``, or the label's own ``grace_s`` when that is longer:
  a ``drift`` keeps its level after its ramp ends and is slow to detect, so
  its labels allow 30 minutes).

A label is detected when at least one alert matches it; an alert is a true
alert when it matches at least one label (so repeated alerts about one
incident all count as true), else a false alert.

Alerts of a type the label lists under ``effects`` on the label's key, in its
window, are true too (a longer answer is also slower and dearer); they detect
nothing on their own.

Traps (the simulator's ``traps``: changes that are not incidents) are scored
apart: a *trap alert* is an alert matched by no label, on the trap's key (any
key when the trap has none), of one of the trap's ``types`` (any type when it
has none), with ``event_time`` in ``[trap.start - 60 s, trap.end + 10 min]``.
Trap alerts are false alerts too; the trap counts say which traps provoke them.

What counts (``count``): ``"pages"`` (the default) scores the pages, the
``firing`` and ``escalated`` messages; ``"all"`` scores every message that is
not ``resolved`` (``firing``, ``escalated`` and ``updated``), as the person
who receives them counts them (SPEC section 2). In ``"all"`` mode a message is
also true when a member of its ``evidence.grouped`` matches a label (it tells
of that incident). Either way the result says how many *first pages* there
were (``firing`` messages that are not a repeat, ``evidence.repeat``) and how
many of them were true, and the notifications per detected incident.

Conventions: recall is 1.0 when there are no labels, precision 1.0 when there
are no alerts (nothing was missed / nothing was wrong); a detection delay is
``first matching event_time - label.start`` (the ``fired_event_time`` of the
alert's evidence when given), clamped at 0.

Pure Python, no dependency on the rest of the project.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Optional

from simulator.io import to_epoch  # label and alert times; other benchmarks import it from here

EARLY_S = 60.0
TRAP_AFTER_S = 600.0
_DAY_S = 86400.0


def alert_body(alert: Dict[str, Any]) -> Dict[str, Any]:
    """The alert object itself, unwrapping a CloudEvents envelope (``data``)."""
    if "type" in alert and "event_time" in alert:
        return alert
    data = alert.get("data")
    if isinstance(data, dict) and "event_time" in data:
        return data
    return alert


def matches(alert: Dict[str, Any], label: Dict[str, Any], grace_s: float = 300.0) -> bool:
    """Whether ``alert`` counts as a detection of ``label``."""
    typ = label["type"]
    if alert.get("type") != typ:
        return False
    if typ == "coordinated_attack":
        if alert.get("subject") != label.get("subject"):
            return False
    else:
        if alert.get("service") != label.get("service") or alert.get("model") != label.get("model"):
            return False
        if typ == "token_abuse" and alert.get("subject") != label.get("subject"):
            return False
    return _in_window(alert, label, grace_s)


def _in_window(alert: Dict[str, Any], label: Dict[str, Any], grace_s: float) -> bool:
    grace = max(grace_s, float(label.get("grace_s") or 0.0))
    t = to_epoch(alert["event_time"])
    return to_epoch(label["start"]) - EARLY_S <= t <= to_epoch(label["end"]) + grace


def in_trap(alert: Dict[str, Any], trap: Dict[str, Any], after_s: float = TRAP_AFTER_S) -> bool:
    """Whether ``alert`` (whatever it matched) falls on ``trap``'s key, types and interval."""
    types = trap.get("types")
    if types and alert.get("type") not in types:
        return False
    if trap.get("service") is not None:
        if alert.get("service") != trap.get("service"):
            return False
        if trap.get("model") is not None and alert.get("model") != trap.get("model"):
            return False
    t = to_epoch(alert["event_time"])
    return to_epoch(trap["start"]) - EARLY_S <= t <= to_epoch(trap["end"]) + after_s


def median(xs: List[float]) -> Optional[float]:
    if not xs:
        return None
    s = sorted(xs)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else 0.5 * (s[mid - 1] + s[mid])


def _near(alert: Dict[str, Any], label: Dict[str, Any], grace_s: float) -> bool:
    """Same key or subject as the label, inside its window, whatever the type."""
    same = (
        alert.get("subject") is not None and alert.get("subject") == label.get("subject")
    ) or (
        label.get("service") is not None
        and alert.get("service") == label.get("service")
        and (label.get("model") is None or alert.get("model") == label.get("model"))
    )
    if not same:
        return False
    return _in_window(alert, label, grace_s)


def score(
    alerts: List[Dict[str, Any]],
    labels: List[Dict[str, Any]],
    duration_s: float,
    grace_s: float = 300.0,
    traps: Optional[List[Dict[str, Any]]] = None,
    count: str = "pages",
) -> Dict[str, Any]:
    """Match ``alerts`` to ``labels`` (and ``traps``) over a run of ``duration_s`` seconds of event time.

    Returns
    -------
    dict
        ``recall`` (overall), ``recall_by_type`` ({type: recall}),
        ``detected_by_type`` ({type: [detected, labels]}), ``precision``,
        ``true_alerts``, ``false_alerts`` (count), ``false_alerts_per_day``,
        ``false_alerts_by_type``, ``collateral_false_alerts`` (false alerts on
        the key or subject of some label, inside its window: symptoms of a
        real incident reported under another type), ``median_delay_s`` and
        ``delay_by_type`` (median of first-detection delays, None when nothing
        was detected), ``detections`` (per detected label: id, type, delay_s,
        alerts), ``missed_labels`` and ``false_alert_list`` (the dicts
        themselves, for diagnosis), ``n_alerts``, ``n_labels``;
        ``precision_by_type`` ({alert type: precision}) and
        ``alerts_by_type`` ({alert type: [true, all]}); with ``traps``:
        ``trap_alerts`` (false alerts inside some trap), ``trap_alerts_by_kind``
        ({kind: alerts}), ``traps_by_kind`` ({kind: traps}),
        ``traps_fired_by_kind`` ({kind: traps with an alert}) and
        ``trap_alert_list`` (trap id, kind and alert). Without ``traps`` these
        are 0 / empty. ``detected_grouped_only_by_type`` ({type: labels})
        and ``grouped_only_labels`` (ids): labels detected only as a member
        in ``evidence.grouped`` of a page or update (counted in recall).
        ``count`` says what the alert figures count (``"pages"`` or
        ``"all"``); ``first_pages``, ``true_first_pages`` and
        ``precision_first_pages`` cover the first pages only; ``updates`` is
        the number of ``updated`` messages; ``notifications_per_detected`` is
        true alerts per detected label (None when none was detected).

    Examples
    --------
    >>> lab = {"id": "a", "type": "latency", "service": "s", "model": "m", "subject": None,
    ...        "start": "2026-01-05T01:00:00Z", "end": "2026-01-05T01:10:00Z"}
    >>> hit = {"type": "latency", "service": "s", "model": "m", "subject": None,
    ...        "event_time": "2026-01-05T01:02:00Z"}
    >>> r = score([hit], [lab], duration_s=86400)
    >>> r["recall"], r["precision"], r["median_delay_s"]
    (1.0, 1.0, 120.0)

    Counting as the receiver does, an update is a notification too:

    >>> upd = dict(hit, status="updated", event_time="2026-01-05T03:00:00Z")
    >>> r = score([hit, upd], [lab], duration_s=86400, count="all")
    >>> r["n_alerts"], r["true_alerts"], r["false_alerts"], r["first_pages"]
    (2, 1, 1, 1)
    >>> score([hit, upd], [lab], duration_s=86400)["n_alerts"]
    1
    """
    if duration_s <= 0:
        msg = f"duration_s must be > 0, got {duration_s!r}"
        raise ValueError(msg)
    # Pages are firing and escalated messages: precision and false alerts count
    # them. A resolve neither detects nor counts as false. An incident's
    # messages (its page and its "updated" announcements) detect a label
    # through the incident's own type or through a member in
    # ``evidence.grouped`` (the operator was told of it); labels detected
    # only that way are also reported apart (``detected_grouped_only_by_type``).
    if count not in ("pages", "all"):
        msg = f"count must be 'pages' or 'all', got {count!r}"
        raise ValueError(msg)
    all_bodies = [alert_body(a) for a in alerts]
    counted = ("firing", "escalated", "updated") if count == "all" else ("firing", "escalated")
    bodies = [b for b in all_bodies if b.get("status", "firing") in counted]
    updates = [b for b in all_bodies if b.get("status") == "updated"]
    matched = [False] * len(bodies)
    members: List[tuple] = []
    for a in bodies + ([] if count == "all" else updates):
        fired_at = (a.get("evidence") or {}).get("fired_event_time") or a["event_time"]
        for m in (a.get("evidence") or {}).get("grouped") or ():
            if isinstance(m, dict) and m.get("event_time") is not None:
                members.append((m, fired_at))
    by_type: Dict[str, List[int]] = {}
    delays_by_type: Dict[str, List[float]] = {}
    detections: List[Dict[str, Any]] = []
    missed: List[Dict[str, Any]] = []
    grouped_only: Dict[str, int] = {}
    grouped_only_ids: List[Any] = []
    for label in labels:
        typ = label["type"]
        counts = by_type.setdefault(typ, [0, 0])
        counts[1] += 1
        start = to_epoch(label["start"])
        first: Optional[float] = None
        n = 0
        for i, a in enumerate(bodies):
            if matches(a, label, grace_s):
                matched[i] = True
                n += 1
                # Delay to when the alert could fire (its evidence says at which
                # event time), else to the event time of its first observation.
                fired = (a.get("evidence") or {}).get("fired_event_time")
                t = to_epoch(fired if fired is not None else a["event_time"])
                if first is None or t < first:
                    first = t
        via_group = False
        if first is None:
            for m, fired_at in members:
                if matches(m, label, grace_s):
                    t = max(to_epoch(fired_at), to_epoch(m["event_time"]))
                    if first is None or t < first:
                        first = t
                        via_group = True
        if first is None:
            missed.append(label)
            continue
        if via_group:
            grouped_only[typ] = grouped_only.get(typ, 0) + 1
            grouped_only_ids.append(label.get("id"))
        counts[0] += 1
        delay = max(0.0, first - start)
        delays_by_type.setdefault(typ, []).append(delay)
        detections.append({"label_id": label.get("id"), "type": typ, "delay_s": delay, "alerts": n})

    # Alerts of a type the label lists under ``effects`` (longer outputs make
    # calls slower and dearer) on the same key, in its window, are true too:
    # the simulator injected that symptom. They detect nothing on their own.
    effect_alerts = 0
    for i, a in enumerate(bodies):
        if not matched[i] and any(a.get("type") in (lab.get("effects") or ()) and _near(a, lab, grace_s)
                                  for lab in labels):
            matched[i] = True
            effect_alerts += 1
    if count == "all":
        # A notification that names a real incident among its grouped members
        # told the receiver of it: it is true.
        for i, a in enumerate(bodies):
            if not matched[i] and any(
                isinstance(m, dict) and m.get("event_time") is not None and matches(m, lab, grace_s)
                for m in (a.get("evidence") or {}).get("grouped") or () for lab in labels
            ):
                matched[i] = True
    false_list = [a for a, m in zip(bodies, matched) if not m]
    first = [m for a, m in zip(bodies, matched)
             if a.get("status", "firing") == "firing" and not (a.get("evidence") or {}).get("repeat")]
    false_by_type: Dict[str, int] = {}
    for a in false_list:
        false_by_type[str(a.get("type"))] = false_by_type.get(str(a.get("type")), 0) + 1
    collateral = sum(1 for a in false_list if any(_near(a, lab, grace_s) for lab in labels))
    alerts_by_type: Dict[str, List[int]] = {}
    for a, m in zip(bodies, matched):
        c = alerts_by_type.setdefault(str(a.get("type")), [0, 0])
        c[0] += int(m)
        c[1] += 1
    trap_list: List[Dict[str, Any]] = []
    trap_by_kind: Dict[str, int] = {}
    traps_by_kind: Dict[str, int] = {}
    fired: Dict[str, set] = {}
    trapped = 0
    for trap in traps or ():
        traps_by_kind[trap["kind"]] = traps_by_kind.get(trap["kind"], 0) + 1
        trap_by_kind.setdefault(trap["kind"], 0)
        fired.setdefault(trap["kind"], set())
    if traps:
        for a in false_list:
            kinds = set()
            for trap in traps:
                if in_trap(a, trap):
                    trap_list.append({"trap_id": trap.get("id"), "kind": trap["kind"], "alert": a})
                    kinds.add(trap["kind"])
                    fired[trap["kind"]].add(trap.get("id") or id(trap))
            for k in kinds:
                trap_by_kind[k] += 1
            trapped += bool(kinds)
    n_labels = len(labels)
    detected = sum(c[0] for c in by_type.values())
    all_delays = [d for ds in delays_by_type.values() for d in ds]
    n_true = sum(matched)
    return {
        "count": count,
        "n_labels": n_labels,
        "n_alerts": len(bodies),
        "updates": sum(1 for b in all_bodies if b.get("status") == "updated"),
        "first_pages": len(first),
        "true_first_pages": sum(first),
        "precision_first_pages": sum(first) / len(first) if first else 1.0,
        "notifications_per_detected": n_true / detected if detected else None,
        "recall": detected / n_labels if n_labels else 1.0,
        "recall_by_type": {t: c[0] / c[1] for t, c in sorted(by_type.items())},
        "detected_by_type": {t: list(c) for t, c in sorted(by_type.items())},
        "precision": n_true / len(bodies) if bodies else 1.0,
        "precision_by_type": {t: c[0] / c[1] for t, c in sorted(alerts_by_type.items())},
        "alerts_by_type": {t: list(c) for t, c in sorted(alerts_by_type.items())},
        "true_alerts": n_true,
        "effect_alerts": effect_alerts,
        "false_alerts": len(false_list),
        "false_alerts_per_day": len(false_list) * _DAY_S / duration_s,
        "false_alerts_by_type": dict(sorted(false_by_type.items())),
        "collateral_false_alerts": collateral,
        "median_delay_s": median(all_delays),
        "delay_by_type": {t: median(ds) for t, ds in sorted(delays_by_type.items())},
        "detections": detections,
        "missed_labels": missed,
        "false_alert_list": false_list,
        "detected_grouped_only_by_type": dict(sorted(grouped_only.items())),
        "grouped_only_labels": grouped_only_ids,
        "trap_alerts": trapped,
        "trap_alerts_by_kind": dict(sorted(trap_by_kind.items())),
        "traps_by_kind": dict(sorted(traps_by_kind.items())),
        "traps_fired_by_kind": {k: len(v) for k, v in sorted(fired.items())},
        "trap_alert_list": trap_list,
    }


def load_jsonl(path: str) -> List[Dict[str, Any]]:
    """Objects from a JSON-lines file (or a file holding one JSON array)."""
    with open(path, "rb") as f:
        text = f.read().decode("utf-8")
    stripped = text.lstrip()
    if stripped.startswith("["):
        return list(json.loads(stripped))
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def format_report(result: Dict[str, Any]) -> str:
    """A short human-readable summary of :func:`score`'s result."""
    lines = [
        f"recall {result['recall']:.3f} ({result['n_labels']} labels)  "
        f"precision {result['precision']:.3f} ({result['n_alerts']} alerts)  "
        f"false alerts {result['false_alerts']} ({result['false_alerts_per_day']:.1f}/day, "
        f"{result['collateral_false_alerts']} collateral)  "
        f"median delay {result['median_delay_s']} s",
    ]
    for typ, (hit, total) in result["detected_by_type"].items():
        grp = result.get("detected_grouped_only_by_type", {}).get(typ)
        lines.append(f"  {typ:20s} {hit}/{total}  delay {result['delay_by_type'].get(typ)}"
                     + (f"  ({grp} of them only as grouped members)" if grp else ""))
    for typ, (true, total) in result.get("alerts_by_type", {}).items():
        lines.append(f"  alerts {typ:20s} {true}/{total} true  precision {true / total:.3f}")
    for kind, n in result.get("traps_by_kind", {}).items():
        lines.append(f"  trap {kind:18s} {result['trap_alerts_by_kind'].get(kind, 0)} alerts "
                     f"({result['traps_fired_by_kind'].get(kind, 0)} of {n} traps fired)")
    for lab in result["missed_labels"]:
        lines.append(f"  missed {lab.get('id')} {lab['type']} {lab.get('service')}/{lab.get('model')} "
                     f"{lab.get('subject') or ''} {lab['start']}..{lab['end']}")
    return "\n".join(lines)
