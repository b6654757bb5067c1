"""Cross-key references of one process, kept between runs.

One reference is learned from many keys at once and shared by the workers
of a process: the parents' noise levels (what a new key borrows). Bytewax
snapshots per-key state only, so without this file a restarted process would
judge a new key only after its own warm-up. (Each service's heavy-user
population, for ``token_abuse``, is in that service's keyed state.)

The references themselves are :data:`PRIORS`, the process's one
:class:`detectors.priors.ParentPriors` (the window step reads and feeds it).
``configure(path)`` loads the file if it exists; ``maybe_save()``, called from
the per-key snapshots, rewrites it atomically at most every ``interval``
seconds. The file is JSON (data, never code), written with mode 0600::

    {"format": 3, "kind": "sentinel-cross-key", "saved_at": 1767571200.0,
     "priors": {"alpha": 0.2, "min_keys": 2, "max_keys": 64,
                "scales": [[["service", "search"], "latency_p95_ms", {"search/gpt-4o": 0.21}], ...]}}

A missing, torn, older (pickled) or foreign file is a fresh start, logged in
one line, never an error.
"""

from __future__ import annotations

import logging
import os
import json
import math
import threading
import time
from typing import Any, Dict, Optional, Tuple

from detectors.priors import ParentPriors

log = logging.getLogger("sentinel.crosskey")

FORMAT = 3
KIND = "sentinel-cross-key"

_lock = threading.Lock()
_path: Optional[str] = None
_interval = 10.0
_last = 0.0


# Noise levels of this process's keys, by service, provider and fleet: what a
# new key borrows until it has its own history (not in the per-key snapshots:
# keys report again within minutes of a restart; this module keeps them in its file).
PRIORS = ParentPriors()


def configure(path: Optional[str], interval: float = 10.0) -> None:
    """Keep this process's cross-key references in ``path`` (None: not kept); load them now."""
    global _path, _interval, _last
    with _lock:
        _path, _interval, _last = path, interval, -interval  # the first snapshot saves
    if path:
        load(path)


def path() -> Optional[str]:
    return _path


def _number(v: Any, what: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ValueError(f"{what} is not a finite number")
    return float(v)


def _decode(data: Any) -> Dict[str, Any]:
    """The ``ParentPriors`` state in a cross-key file, checked field by field."""
    if not isinstance(data, dict) or data.get("kind") != KIND or data.get("format") != FORMAT:
        raise ValueError(f"not a cross-key file of format {FORMAT}")
    priors = data.get("priors")
    if not isinstance(priors, dict) or not isinstance(priors.get("scales"), list):
        raise ValueError("no 'priors.scales' list")
    scales: Dict[Tuple[Tuple[str, ...], str], Dict[str, float]] = {}
    for entry in priors["scales"]:
        if not (isinstance(entry, list) and len(entry) == 3 and isinstance(entry[0], list)
                and all(isinstance(x, str) for x in entry[0]) and isinstance(entry[1], str)
                and isinstance(entry[2], dict)):
            raise ValueError("a 'priors.scales' entry is not [[parent...], metric, {key: scale}]")
        scales[(tuple(entry[0]), entry[1])] = {str(k): _number(v, "a scale") for k, v in entry[2].items()}
    state: Dict[str, Any] = {"_scales": scales}
    for name, cast in (("alpha", float), ("min_keys", int), ("max_keys", int)):
        if name in priors:
            state[name] = cast(_number(priors[name], name))
    return state


def _encode(state: Dict[str, Any]) -> Dict[str, Any]:
    return {"alpha": state["alpha"], "min_keys": state["min_keys"], "max_keys": state["max_keys"],
            "scales": [[list(parent), metric, by_key] for (parent, metric), by_key in state["_scales"].items()]}


def load(p: str) -> bool:
    priors_obj = PRIORS
    try:
        with open(p, "rb") as f:
            state = _decode(json.loads(f.read()))
    except FileNotFoundError:
        log.info("cross-key references: %s does not exist yet; learning them from the traffic", p)
        return False
    except Exception as ex:  # a torn, older or foreign file: start fresh, say so in one line
        log.warning("cross-key references: cannot read %s (%s: %s); learning them from the traffic", p,
                    type(ex).__name__, str(ex).splitlines()[0][:200] if str(ex) else "")
        return False
    priors_obj.__setstate__(state)
    log.info("cross-key references restored from %s: noise levels of %d parent/metric pairs", p, len(priors_obj))
    return True


def save(p: Optional[str] = None) -> None:
    p = p or _path
    if not p:
        return
    data = {"format": FORMAT, "kind": KIND, "saved_at": time.time(), "priors": _encode(PRIORS.__getstate__())}
    tmp = f"{p}.tmp-{os.getpid()}-{threading.get_ident()}"
    try:
        d = os.path.dirname(p)
        if d:
            os.makedirs(d, mode=0o700, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(json.dumps(data, separators=(",", ":")).encode())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except (OSError, TypeError, ValueError) as ex:
        log.warning("cross-key references: cannot write %s: %s", p, ex)
        try:
            os.unlink(tmp)
        except OSError:
            pass


def maybe_save() -> None:
    """Save if configured and the last save is ``interval`` seconds old (called at snapshots)."""
    global _last
    if not _path:
        return
    now = time.monotonic()
    with _lock:
        if now - _last < _interval:
            return
        _last = now
    save()
