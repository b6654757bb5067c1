"""Taking up a changed ``policies:`` block of the running flow's definition, without a restart.

Each process that runs a flow from a file watches that file
(:class:`PolicyWatcher`, a daemon thread): every ``policies.reload`` seconds
(5 by default; 0 turns watching off) it reads the file and hashes its
content. Content, not the modification time: a Kubernetes ConfigMap mounted
as a volume changes by a symlink swap, and an editor may keep the time. A new
content is acted on once two successive polls read the same (a file caught
half written is not refused for it):

* The ``policies:`` block is validated with the flow definition's own model
  (:class:`sentinel.config.PoliciesConfig`). An invalid block is refused in
  one log line naming the field; the policies in force stay in force.
* A valid block that differs from the one in force replaces it in this
  process's :class:`PolicyHolder`; every budget step reads the holder and
  adopts the new block with the next batch of each service
  (:mod:`operators.budgets`). One log line names the new version (a hash of
  the block's settings) and the one it replaces.
* A change anywhere else in the file (or to ``policies.guardrail_audit``, a
  sink built at start) is not applied: it is logged as needing a restart
  (``sentinel check -c FLOW --against DIR`` tells what a restart on a
  recovery store would change, :mod:`sentinel.redeploy`).

Metrics: ``sentinel_policy_reloads_total{result="applied|refused"}`` and
``sentinel_policy_version_info{version}`` (1 for the version in force).

Processes of one cluster each watch the file on their own: they take up a
change within a poll or two of each other, and each service's budgets live
in exactly one worker, so a service is never counted under two versions at
once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from typing import Any, Dict, List, Optional, Tuple

import yaml
from pydantic import ValidationError

from sentinel.config import ConfigError, FlowConfig, PoliciesConfig, load_config_dict

log = logging.getLogger("sentinel.policies")


def version_of(policies: PoliciesConfig) -> str:
    """A short hash of the block's settings (defaults filled in): the same block has the same version
    in every process, however the YAML is laid out."""
    doc = json.dumps(policies.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(doc.encode()).hexdigest()[:12]


class PolicyHolder:
    """The policies in force in this process, with their version; budget steps read :attr:`current`.

    ``hot`` says whether a watcher may replace them (the flow then builds its
    budget step even without policies, so a block added later is taken up).
    """

    def __init__(self, policies: PoliciesConfig, hot: bool = False) -> None:
        self._current: Tuple[str, PoliciesConfig] = (version_of(policies), policies)
        self.hot = hot

    @property
    def current(self) -> Tuple[str, PoliciesConfig]:
        return self._current  # one reference: a reader sees the old pair or the new one, never half of each

    @property
    def version(self) -> str:
        return self._current[0]

    def set(self, policies: PoliciesConfig) -> str:
        self._current = (version_of(policies), policies)
        return self._current[0]


# -- metrics (on the process's registry, created once) ----------------------------

_metrics_lock = threading.Lock()
_reloads = None
_version_info = None
_shown_version: Optional[str] = None


def _count(result: str, version: Optional[str] = None) -> None:
    global _reloads, _version_info, _shown_version
    from prometheus_client import Counter, Gauge

    from sentinel.metrics import get_metrics

    with _metrics_lock:
        if _reloads is None:
            r = get_metrics().registry
            _reloads = Counter("sentinel_policy_reloads", "Changed policies: blocks of the flow definition taken "
                               "up (applied) or refused (invalid; the policies in force stay).", ["result"],
                               registry=r)
            _version_info = Gauge("sentinel_policy_version_info", "1 for the version (hash of the settings) of "
                                  "the policies: block in force in this process.", ["version"], registry=r)
            for res in ("applied", "refused"):
                _reloads.labels(result=res)
        if result:
            _reloads.labels(result=result).inc()
        if version is not None and version != _shown_version:
            if _shown_version is not None:
                try:
                    _version_info.remove(_shown_version)
                except KeyError:
                    pass
            _version_info.labels(version=version).set(1)
            _shown_version = version


# -- the watcher ---------------------------------------------------------------------


def _loc(loc: Tuple[Any, ...]) -> str:
    out = "policies"
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _changed(old: Any, new: Any, prefix: str = "", depth: int = 2) -> List[str]:
    """Dotted keys whose values differ between two YAML mappings (down to ``depth`` levels)."""
    if old == new:
        return []
    if depth == 0 or not isinstance(old, dict) or not isinstance(new, dict):
        return [prefix or "(top level)"]
    out: List[str] = []
    for k in sorted(set(old) | set(new), key=str):
        out.extend(_changed(old.get(k), new.get(k), f"{prefix}.{k}" if prefix else str(k), depth - 1))
    return out


def _read(path: str) -> bytes:
    with open(path, "rb") as f:  # follows the symlink as it is now (a ConfigMap's ..data swap)
        return f.read()


class PolicyWatcher:
    """Watches the flow definition ``path`` of the running flow ``cfg`` and keeps ``holder`` current."""

    def __init__(self, path: str, cfg: FlowConfig, holder: Optional[PolicyHolder] = None) -> None:
        self.path = path
        self.cfg = cfg
        self.holder = holder if holder is not None else PolicyHolder(cfg.policies, hot=True)
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        try:
            text = _read(path)
        except OSError:
            text = b""
        self._seen = self._pending = hashlib.sha256(text).hexdigest()
        data = self._parse(text)
        self._rest = self._without_policies(data) if isinstance(data, dict) else None
        if self._rest is None or self._block_version(data) != self.holder.version:
            self._seen = ""  # the file changed since the flow read it: the next polls take it up
        self._unreadable: Optional[str] = None
        _count("", self.holder.version)

    @staticmethod
    def _parse(text: bytes) -> Any:
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError:
            return None

    @staticmethod
    def _block_version(data: Dict[str, Any]) -> Optional[str]:
        try:
            return version_of(PoliciesConfig.model_validate(data.get("policies") or {}))
        except ValidationError:
            return None

    @staticmethod
    def _without_policies(data: Dict[str, Any]) -> Dict[str, Any]:
        return {k: v for k, v in data.items() if k != "policies"}

    @property
    def interval(self) -> float:
        return self.holder.current[1].reload

    # -- one poll ------------------------------------------------------------------

    def poll(self) -> Optional[str]:
        """Read the file once; act on a content read the same twice in a row. Returns what was done
        (``applied``, ``refused``, ``unchanged``, ``restart``) when it acted, else None."""
        try:
            text = _read(self.path)
        except OSError as ex:
            why = ex.strerror or str(ex)
            if why != self._unreadable:
                log.warning("policies: cannot read %s (%s); the policies in force (version %s) stay",
                            self.path, why, self.holder.version)
                self._unreadable = why
            return None
        self._unreadable = None
        digest = hashlib.sha256(text).hexdigest()
        if digest == self._seen:
            self._pending = digest
            return None
        if digest != self._pending:
            self._pending = digest  # wait for the next poll to read the same
            return None
        self._seen = digest
        return self.take_up(text)

    def take_up(self, text: bytes) -> str:
        """Validate the file's ``policies:`` block and put it in force, or refuse it."""
        running_version, running = self.holder.current
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as ex:
            where = getattr(ex, "problem_mark", None)
            at = f" (line {where.line + 1}, column {where.column + 1})" if where is not None else ""
            return self._refuse(f"not valid YAML{at}: {getattr(ex, 'problem', None) or ex}")
        if not isinstance(data, dict):
            return self._refuse(f"a flow definition is a YAML mapping, got {type(data).__name__}")
        block = data.get("policies")
        try:
            new = PoliciesConfig.model_validate({} if block is None else block)
        except ValidationError as ex:
            return self._refuse("; ".join(f"{_loc(e['loc'])}: {e['msg']}" for e in ex.errors()))
        restart = []
        rest = self._without_policies(data)
        if self._rest is not None and rest != self._rest:
            restart = _changed(self._rest, rest)
        if new.guardrail_audit != running.guardrail_audit:
            restart.append("policies.guardrail_audit")
            new = new.model_copy(update={"guardrail_audit": running.guardrail_audit})
        if restart:
            try:
                load_config_dict(data, self.path)
                after = (f"`sentinel check -c {self.path} --against RECOVERY_DIR` shows what a restart would "
                         f"change")
            except ConfigError as ex:  # said now, not at the next start
                after = "and a restart would refuse the file: " + " ".join(str(ex).split())
            log.warning("policies: %s changed outside the policies block (%s): not applied, that takes a restart "
                        "(%s)", self.path, ", ".join(restart), after)
        version = version_of(new)
        if version == running_version:
            return "restart" if restart else "unchanged"
        self.holder.set(new)
        _count("applied", version)
        log.info("policies: version %s in force (was %s), from %s: %s", version, running_version, self.path,
                 describe(new))
        return "applied"

    def _refuse(self, why: str) -> str:
        _count("refused")
        log.error("policies: %s refused: %s; the policies in force (version %s) stay", self.path, why,
                  self.holder.version)
        return "refused"

    # -- the thread ----------------------------------------------------------------

    def start(self) -> None:
        if self.interval <= 0:
            log.info("policies: version %s; policies.reload is 0, %s is not watched", self.holder.version,
                     self.path)
            return
        log.info("policies: version %s in force; %s is read every %gs for changes", self.holder.version,
                 self.path, self.interval)
        self._thread = threading.Thread(target=self._run, name="sentinel-policy-reload", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            interval = self.interval
            if interval <= 0:
                log.info("policies: policies.reload is 0 now; %s is no longer watched", self.path)
                return
            if self._stop.wait(interval):
                return
            try:
                self.poll()
            except Exception:  # the watcher must not die of one bad read; the policies in force stay
                log.exception("policies: reading %s failed", self.path)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None


def describe(p: PoliciesConfig) -> str:
    parts = [f"{len(p.budgets)} budget rule(s)", f"allowed models for {len(p.allowed_models)} service(s)"]
    if p.guardrail_rate is not None:
        g = p.guardrail_rate
        parts.append(f"guardrail rate {g.max_rate:.1%} per {g.window:g}s (at least {g.min_events})")
    return ", ".join(parts)


# -- the process's watcher -------------------------------------------------------------

_watcher: Optional[PolicyWatcher] = None
_lock = threading.Lock()


def start(path: Optional[str], cfg: FlowConfig) -> Optional[PolicyWatcher]:
    """Watch ``path``, the definition ``cfg`` was read from (once per process; None: nothing to watch)."""
    global _watcher
    if not path:
        return None
    with _lock:
        if _watcher is not None:
            _watcher.stop()
        _watcher = PolicyWatcher(path, cfg)
        _watcher.start()
        return _watcher


def stop() -> None:
    global _watcher
    with _lock:
        if _watcher is not None:
            _watcher.stop()
            _watcher = None


def holder_for(cfg: FlowConfig) -> PolicyHolder:
    """The holder a flow built from ``cfg`` reads: the watcher's when this process watches the file ``cfg``
    came from, else one that keeps ``cfg.policies``."""
    w = _watcher
    if w is not None and w.cfg is cfg and w.interval > 0:
        return w.holder
    return PolicyHolder(cfg.policies)
