"""Cross-key references of one process, kept between runs.

One reference is learned from many keys at once and shared by the workers
of a process: the parents' noise levels (what a new key borrows). Bytewax
snapshots per-key state only, so without this file a restarted process would
judge a new key only after its own warm-up. (Each service's heavy-user
population, for ``token_abuse``, is in that service's keyed state.)

``configure(path)`` loads the file if it exists; ``maybe_save()``, called from
the per-key snapshots, rewrites it atomically at most every ``interval``
seconds. A missing or unreadable file is a fresh start, logged, never an error.
"""

from __future__ import annotations

import logging
import os
import pickle
import threading
import time
from typing import Optional

log = logging.getLogger("sentinel.crosskey")

FORMAT = 2

_lock = threading.Lock()
_path: Optional[str] = None
_interval = 10.0
_last = 0.0


def configure(path: Optional[str], interval: float = 10.0) -> None:
    """Keep this process's cross-key references in ``path`` (None: not kept); load them now."""
    global _path, _interval, _last
    with _lock:
        _path, _interval, _last = path, interval, -interval  # the first snapshot saves
    if path:
        load(path)


def path() -> Optional[str]:
    return _path


def _priors():
    from operators import model_windows

    return model_windows.PRIORS


def load(p: str) -> bool:
    priors_obj = _priors()
    try:
        with open(p, "rb") as f:
            data = pickle.load(f)
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"not a cross-key file of format {FORMAT}")
        priors = data["priors"]
    except FileNotFoundError:
        log.info("cross-key references: %s does not exist yet; learning them from the traffic", p)
        return False
    except Exception as ex:  # a torn or foreign file: start fresh, say so
        log.warning("cross-key references: cannot read %s (%s); learning them from the traffic", p, ex)
        return False
    priors_obj.__setstate__(priors)
    log.info("cross-key references restored from %s: noise levels of %d parent/metric pairs", p, len(priors_obj))
    return True


def save(p: Optional[str] = None) -> None:
    p = p or _path
    if not p:
        return
    data = {"format": FORMAT, "saved_at": time.time(), "priors": _priors().__getstate__()}
    tmp = f"{p}.tmp-{os.getpid()}-{threading.get_ident()}"
    try:
        d = os.path.dirname(p)
        if d:
            os.makedirs(d, exist_ok=True)
        with open(tmp, "wb") as f:
            pickle.dump(data, f, protocol=pickle.HIGHEST_PROTOCOL)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except OSError as ex:
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
