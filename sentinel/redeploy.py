"""Redeploying a changed flow definition onto a recovery store.

A restored key's state was built under the flow definition of the run that
snapshotted it. Two kinds of setting:

* Settings the stored state is shaped by (:data:`FIXED`: the window sizes,
  the token-abuse horizon, the incident grouping keys). A change to one of
  them cannot be honoured by the stored state: the start is refused in one
  line (exit 2), naming the setting, its stored and its new value.
* Every other detection setting (:data:`APPLIED`) takes effect: each restored
  key's detectors are rebuilt from the current definition and adopt the
  learned state (baselines, profiles, open episodes) of the metrics and types
  the new definition keeps (:func:`refresh_model_state`). A type no longer
  listed in ``detection.metrics`` stops alerting on every restored key; one
  newly listed warms up as on a new key.

The settings of the last start are kept in the recovery directory
(``sentinel-flow-settings.json``); ``sentinel check -c FLOW --against DIR``
prints what a start with FLOW on that store would refuse or change.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional, Tuple

from sentinel.config import FlowConfig

SETTINGS_FILE = "sentinel-flow-settings.json"
FORMAT = 1

FIXED = ("windows.size", "detection.token_abuse.window", "detection.token_abuse.horizon", "alerting.group_by")
APPLIED = ("detection.metrics", "detection.warmup_windows", "detection.min_requests", "detection.threshold",
           "detection.persistence", "detection.quiet_windows", "detection.seasonality", "detection.cold_windows",
           "detection.drift_min_change", "detection.borrow_from_parents", "detection.token_abuse.enabled",
           "detection.token_abuse.min_tokens", "detection.token_abuse.min_requests", "detection.token_abuse.ratio",
           "detection.token_abuse.p_value", "detection.token_abuse.heavy_quantile",
           "detection.token_abuse.heavy_ratio", "detection.token_abuse.max_share",
           "detection.token_abuse.persistence", "detection.token_abuse.sustain",
           "detection.token_abuse.rise_quantile", "detection.token_abuse.history_windows",
           "detection.token_abuse.min_population", "detection.token_abuse.max_actors",
           "detection.coordinated_attack.enabled", "detection.coordinated_attack.window",
           "detection.coordinated_attack.threshold",
           "windows.allowed_lateness", "windows.idle_partition", "windows.max_open_windows")


def _get(cfg: FlowConfig, dotted: str) -> Any:
    v: Any = cfg
    for part in dotted.split("."):
        v = getattr(v, part)
    return list(v) if isinstance(v, (list, tuple)) else v


def settings_of(cfg: FlowConfig) -> Dict[str, Dict[str, Any]]:
    """The settings a recovery store depends on (``fixed``) and those that take effect on restored keys (``applied``)."""
    return {"fixed": {k: _get(cfg, k) for k in FIXED}, "applied": {k: _get(cfg, k) for k in APPLIED}}


def settings_path(recovery_directory: str) -> str:
    return os.path.join(recovery_directory, SETTINGS_FILE)


def load(recovery_directory: str) -> Optional[Dict[str, Dict[str, Any]]]:
    """The settings stored by the last start on this store, or None (none stored, or unreadable)."""
    try:
        with open(settings_path(recovery_directory), "rb") as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("fixed"), dict):
        return None
    return {"fixed": doc["fixed"], "applied": doc.get("applied") or {}}


def save(recovery_directory: str, cfg: FlowConfig) -> None:
    """Store the flow's settings in the recovery directory (written to a temporary file, then renamed)."""
    doc = {"format": FORMAT, **settings_of(cfg)}
    path = settings_path(recovery_directory)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=1, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def _show(v: Any) -> str:
    return json.dumps(v)


def compare(stored: Dict[str, Dict[str, Any]], cfg: FlowConfig) -> Tuple[List[str], List[str]]:
    """(refused, applied): one line per setting whose change the store cannot honour, one per change taking effect."""
    now = settings_of(cfg)
    refused = [f"{k}: {_show(stored['fixed'][k])} in the recovery store, {_show(v)} in the flow"
               for k, v in now["fixed"].items() if k in stored["fixed"] and stored["fixed"][k] != v]
    applied = [f"{k}: {_show(stored['applied'][k])} -> {_show(v)}"
               for k, v in now["applied"].items() if k in stored["applied"] and stored["applied"][k] != v]
    return refused, applied


def refusal(recovery_directory: str, cfg: FlowConfig) -> Optional[str]:
    """Why the flow cannot start on this recovery store, in one line, or None."""
    stored = load(recovery_directory)
    if stored is None:
        return None
    refused, _ = compare(stored, cfg)
    if not refused:
        return None
    return (f"recovery directory {recovery_directory} holds state the flow cannot use: " + "; ".join(refused)
            + " (keep the stored value, or start on a new recovery directory: the baselines learn again)")


# -- restored state -----------------------------------------------------------------------


def refresh_model_state(cfg: FlowConfig, state):
    """A restored service/model key's state under the current definition (detection settings, window limits).

    The detectors are rebuilt from ``cfg`` when any of their settings differs
    and take over the learned state of what the definition keeps; the
    windows take the current lateness, idle and open-window limits.
    """
    if state is None:
        return None
    w = cfg.windows
    win = state.windows
    win.lateness, win.idle_partition, win.max_open = w.allowed_lateness, w.idle_partition, w.max_open_windows
    fresh = _model_detectors(cfg, state.key)
    old = state.detectors
    if _settings(old) != _settings(fresh):
        state.detectors = adopt(fresh, old)
    return state


def _model_detectors(cfg: FlowConfig, key: str):
    """The detectors a new key would get under ``cfg``, built by the operator's own code for a new key."""
    from types import SimpleNamespace

    from operators.model_windows import ModelWindowLogic

    return ModelWindowLogic._new_state(SimpleNamespace(cfg=cfg), key).detectors


def _settings(det) -> Dict[str, Any]:
    return {k: v for k, v in vars(det).items() if not k.startswith("_")}


def adopt(fresh, old):
    """``fresh`` (detectors built from the current settings) with the learned state of ``old``.

    Settings (public attributes) are ``fresh``'s. Learned state (underscored
    attributes, and those of its per-type detectors) is ``old``'s, except what
    belongs to a metric or alert type ``fresh`` does not judge (dropped) or one
    ``old`` did not (``fresh``'s new one), and the parts a switched-off feature
    does not have (None in ``fresh``).
    """
    from detectors.windowed import ALL_TYPES, DRIFT_METRICS, METRICS

    every = set(METRICS) | set(DRIFT_METRICS) | {t for t, _, _ in METRICS.values()} | set(ALL_TYPES) | {
        "multivariate", "error_rate"}
    kept = set(fresh._metrics) | set(fresh._ep) | set(fresh._drifts.metrics)
    _adopt_vars(vars(fresh), vars(old), every, kept)
    return fresh


# KeyDetectors' per-type detectors: adopted attribute by attribute, as KeyDetectors itself.
_PARTS = ("_traffic", "_pooled", "_quantiles", "_errors", "_drifts")


def _adopt_vars(new: Dict[str, Any], prev: Dict[str, Any], every, kept) -> None:
    for name, value in list(new.items()):
        if not name.startswith("_") or name == "_metrics" or name not in prev:
            continue
        was = prev[name]
        if name in _PARTS:
            # The drift part's state is by drift metric, whose names the tokens and cost judge too:
            # it keeps only the metrics the new drift watch has.
            part_kept = set(value.metrics) if name == "_drifts" else kept
            _adopt_vars(vars(value), vars(was), every, part_kept)
            continue
        if name in ("_season", "_mv", "_memory") and value is None:
            continue  # the feature is off now
        if isinstance(value, dict) and isinstance(was, dict):
            merged = {k: v for k, v in was.items() if k not in every or k in kept}
            for k, v in value.items():
                merged.setdefault(k, v)
            new[name] = merged
        elif was is None and value is not None and name in ("_season", "_mv", "_memory"):
            continue  # the feature is on now: fresh's starts learning
        else:
            new[name] = was


def refresh_actor_state(cfg: FlowConfig, state):
    """A restored service's token-abuse state under the current thresholds and window limits."""
    if state is None or not hasattr(state, "detector"):
        return state
    ta = cfg.detection.token_abuse
    det = state.detector
    for k in ("min_tokens", "min_requests", "ratio", "p_value", "heavy_quantile", "heavy_ratio", "max_share",
              "persistence", "sustain", "rise_quantile", "history_windows", "min_population", "max_actors"):
        if hasattr(det, k):
            setattr(det, k, getattr(ta, k))
    habits = getattr(det, "_habits", None)
    if habits is not None and hasattr(habits, "capacity"):
        habits.capacity = ta.max_actors
    if hasattr(det, "quiet_windows"):
        det.quiet_windows = cfg.detection.quiet_windows
    w = cfg.windows
    win = state.windows
    win.lateness, win.idle_partition, win.max_open = w.allowed_lateness, w.idle_partition, w.max_open_windows
    return state


def refresh_attack_state(cfg: FlowConfig, state):
    """A restored security source's state under the current window and threshold."""
    if state is None:
        return state
    ac = cfg.detection.coordinated_attack
    state.detector.window, state.detector.threshold = ac.window, ac.threshold
    return state
