"""The :class:`Simulator`: one run's fleet, incidents and traps put together, and its events."""

from __future__ import annotations

from typing import Any, Dict, Iterator, List, Optional, Tuple, Union

from simulator.config import DEFAULT_START, Incidents, SimConfig, Traps
from simulator.fleet import Fleet, RateCurve
from simulator.io import companion_paths, dumps_line, write_lines, write_records
from simulator.schedule import plan_incidents
from simulator.traffic import CHUNK_S, Traffic
from simulator.traps import plan_traffic_traps, schedule_extremes, trap_records


class Simulator:
    """Deterministic telemetry for one run of ``hours`` from ``start``.

    Parameters
    ----------
    seed
        Everything random derives from it.
    start
        Event time of the run's start, epoch seconds (or an RFC 3339 string).
    hours
        Length of the run in event time.
    rate
        Mean number of background ``llm.request`` events per second over the
        run (planned-ramp and cold-start traffic come on top).
    incidents
        ``"auto"`` for the seed's schedule, or a list of dicts shaped like
        :attr:`labels` (``type``, ``service``, ``model``, optional ``subject``,
        ``start``, ``end``, optional ``magnitude``; for ``drift`` optional
        ``metric``, one of :data:`~simulator.schedule.DRIFT_METRICS`); ``[]`` for none.
    traps
        ``"auto"``: with ``incidents="auto"`` and ``hours >= 6``, one planned
        ramp and one cold start on the seed's schedule, else none. Or a list of
        dicts: ``{"kind": "planned_ramp", "service", "model", "start",
        optional "end" (default start + 45 min), optional "magnitude" (default
        2.0)}`` or ``{"kind": "cold_start", "service", "model" (a pair not in
        the fleet), "start", optional "end" (default start + 1 h), optional
        "share" (default 0.05), optional "error_rate"}``. ``None`` or ``[]``
        for none. The diurnal swing and the isolated extreme requests are
        always in the data and always listed in :attr:`traps`.
    magnitude_scale
        Scales every *auto* incident's magnitude in log terms (``m ** scale``
        for factors; ``base * (m / base) ** scale`` for an error rate against
        the key's own; ``3 * (m / 3) ** scale`` attack events against the
        background's cap of 3). Types, keys and times stay the same, so runs
        at different scales are comparable.

    The same parameters as a :class:`~simulator.config.SimConfig`:
    ``Simulator.from_config(cfg)``.

    Examples
    --------
    >>> sim = Simulator(seed=1, hours=0.05, rate=5.0, incidents=[])
    >>> evs = list(sim.events())
    >>> evs[0]["timestamp"] <= evs[-1]["timestamp"]
    True
    >>> sim.labels
    []
    >>> [t["kind"] for t in sim.traps]
    ['diurnal']
    """

    def __init__(
        self,
        seed: int = 7,
        start: Union[float, str] = DEFAULT_START,
        hours: float = 6.0,
        rate: float = 18.5,
        incidents: Incidents = "auto",
        traps: Traps = "auto",
        magnitude_scale: float = 1.0,
    ) -> None:
        self._setup(SimConfig(seed, start, hours, rate, incidents, traps, magnitude_scale))

    @classmethod
    def from_config(cls, cfg: SimConfig) -> "Simulator":
        sim = cls.__new__(cls)
        sim._setup(cfg)
        return sim

    def _setup(self, cfg: SimConfig) -> None:
        self.config = cfg
        self.seed = cfg.seed
        self.start = cfg.start
        self.hours = cfg.hours
        self.rate = cfg.rate
        self.magnitude_scale = cfg.magnitude_scale
        self.end = cfg.end
        self._fleet = Fleet(cfg.seed)
        self._curve = RateCurve(cfg.start, cfg.end, cfg.rate)
        self._incidents, drift_keys = plan_incidents(cfg, self._fleet, self._curve)
        self._traffic_traps = plan_traffic_traps(cfg, self._fleet, self._incidents, drift_keys)
        self._extremes = schedule_extremes(cfg, self._fleet, self._curve)
        self._trap_list = trap_records(cfg, self._fleet, self._curve, self._traffic_traps, self._extremes,
                                       self._incidents)
        self._traffic = Traffic(cfg, self._fleet, self._curve, self._incidents, self._traffic_traps, self._extremes)

    # ------------------------------------------------------------ the run

    def rate_at(self, t: float, service: Optional[str] = None, model: Optional[str] = None) -> float:
        """Expected background ``llm.request`` rate (events/s) at event time ``t``, fleet-wide or for one key.

        Background only: planned-ramp and cold-start traffic (:attr:`traps`) come on top.
        """
        lam = self._curve.at(t)
        if service is not None:
            lam *= self._fleet.key_index[(service, model)].share
        return lam

    @property
    def keys(self) -> List[Dict[str, Any]]:
        """The fleet: one dict per service/model key (a cold-start key is listed in :attr:`traps`)."""
        return [
            {"service": k.service, "model": k.model, "provider": k.provider, "share": k.share,
             "streams": k.streams, "error_rate": k.err}
            for k in self._fleet.keys
        ]

    @property
    def expected_events(self) -> float:
        """Expected number of ``llm.request`` events: background plus planned-ramp and cold-start traffic.

        (Incidents and the few extreme requests are not counted.)
        """
        n = self.rate * self.hours * 3600.0
        for tr in self._traffic_traps:
            t = max(self.start, tr.start)
            while t < self.end:
                t1 = min(t + CHUNK_S, self.end)
                mid = 0.5 * (t + t1)
                n += self.rate_at(mid) * tr.key.share * tr.extra(mid) * (t1 - t)
                t = t1
        return n

    @property
    def labels(self) -> List[Dict[str, Any]]:
        """One dict per injected incident.

        Fields: id, type, service, model, subject, start, end, magnitude,
        metric (what it moves first), effects (alert types it can legitimately
        raise besides its own), detail; a drift also has ``grace_s`` (how long
        past ``end`` an alert still detects it: the drifted level stays).
        """
        return [inc.label() for inc in self._incidents]

    @property
    def traps(self) -> List[Dict[str, Any]]:
        """One dict per trap (a change that is not an incident and must not alert), by start time.

        Fields: id, kind (one of :data:`~simulator.traps.TRAP_KINDS`), service,
        model (None for ``diurnal``: every key), start, end, types (the alert
        types it concerns; None for any), magnitude, detail.
        """
        return [dict(t) for t in self._trap_list]

    # ------------------------------------------------------------ output

    def events(self) -> Iterator[Dict[str, Any]]:
        """Every event of the run in non-decreasing event time (a fresh, identical pass each call)."""
        return self._traffic.events()

    def iter_lines(self) -> Iterator[bytes]:
        """The events as JSON lines (bytes, each ending in ``\\n``)."""
        dumps = dumps_line
        for ev in self._traffic.events():
            yield dumps(ev)

    def write(self, path: str, labels_path: Optional[str] = None, traps_path: Optional[str] = None) -> Tuple[int, str]:
        """Write events to ``path`` (JSON lines), labels to ``labels_path``, traps to ``traps_path``.

        ``labels_path`` and ``traps_path`` default to ``path`` with
        ``.labels.jsonl`` / ``.traps.jsonl`` in place of its extension (see
        :func:`~simulator.io.companion_paths`). Returns the number of events and the labels path.
        """
        default_labels, default_traps = companion_paths(path)
        labels_path = labels_path or default_labels
        traps_path = traps_path or default_traps
        n = write_lines(path, self.iter_lines())
        write_records(labels_path, self.labels)
        write_records(traps_path, self._trap_list)
        return n, labels_path
