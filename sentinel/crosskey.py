"""Cross-key references of one flow, kept between runs.

One reference is learned from many keys at once and shared by the workers
of a process's flow: the parents' noise levels (what a new key borrows). Bytewax
snapshots per-key state only, so without this file a restarted process would
judge a new key only after its own warm-up. (Each service's heavy-user
population, for ``token_abuse``, is in that service's keyed state.)

A :class:`CrossKey` holds one flow's references, a
:class:`detectors.priors.ParentPriors` (``priors``: the window step reads and
feeds it), and the file they are kept in. The flow builder makes one per
flow (or takes the one the runtime made for the process), and hands it to
the window step: two flows built in one process share nothing. Made with a
path, it loads the file if it exists; ``maybe_save()``, called from the
per-key snapshots, rewrites it atomically at most every ``interval`` seconds.
The file is JSON (data, never code), written with mode 0600::

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


class CrossKey:
    """One flow's cross-key references (``priors``) and the file they are kept in (``path``; None: not kept).

    Made with a path, the file is loaded now (a missing or unusable file is a fresh start).
    """

    def __init__(self, path: Optional[str] = None, interval: float = 10.0,
                 priors: Optional[ParentPriors] = None) -> None:
        # Noise levels of the flow's keys, by service, provider and fleet: what a new key borrows until it
        # has its own history (not in the per-key snapshots: keys report again within minutes of a restart).
        self.priors = priors if priors is not None else ParentPriors()
        self.path = path
        self.interval = interval
        self._lock = threading.Lock()
        self._last = -interval  # the first snapshot saves
        if path:
            self.load(path)

    def load(self, p: str) -> bool:
        """Take the references in file ``p`` (False, with one log line, when it cannot be used)."""
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
        self.priors.__setstate__(state)
        log.info("cross-key references restored from %s: noise levels of %d parent/metric pairs", p,
                 len(self.priors))
        return True

    def save(self, p: Optional[str] = None) -> None:
        """Write the references to ``p`` (else the flow's path; nothing when neither is set)."""
        p = p or self.path
        if not p:
            return
        data = {"format": FORMAT, "kind": KIND, "saved_at": time.time(),
                "priors": _encode(self.priors.__getstate__())}
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

    def maybe_save(self) -> None:
        """Save if there is a path and the last save is ``interval`` seconds old (called at snapshots)."""
        if not self.path:
            return
        now = time.monotonic()
        with self._lock:
            if now - self._last < self.interval:
                return
            self._last = now
        self.save()
