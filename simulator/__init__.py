"""Seeded, deterministic LLM telemetry with labelled incidents and traps (SPEC section 3).

:class:`Simulator` generates the canonical events of SPEC section 1 for a small
fleet (four services calling ten service/model keys), in non-decreasing event
time, together with

* ``labels``: one dict per injected incident, the ground truth that
  :mod:`benchmarks.scoring` matches alerts against, and
* ``traps``: one dict per change in the data that is *not* an incident and must
  not raise an alert (scored separately as trap alerts).

Everything comes from ``random.Random`` instances derived from ``seed``; no
wall clock is read, so the same arguments always give byte-identical output.

What the background looks like:

* Poisson arrivals with a diurnal swing (rate x ``1 - 0.4 cos(2 pi h / 24)``,
  h = UTC hour: trough at 00:00, peak at 12:00), normalised so the run's mean
  rate is ``rate`` events/s.
* Per key: log-normal input / output tokens, ttft = log-normal base plus a
  prefill term, latency = ttft + output tokens / decode speed (so latency is
  proportional to output tokens and heavy-tailed), cost = tokens x the model's
  price, a 0.5-2 % error rate (``rate_limit``, ``server_error``, ``timeout``;
  error events carry no ttft, tokens or cost; timeouts take 30 s).
  ``doc-summarizer`` does not stream, so its events carry no ``ttft_ms``.
* 200 users in 24 tenants with Zipf-like activity, each with a home region and
  a source IP.
* Security events at about 0.02/s spread over ~1,700 sources, never more than
  three from one source within five minutes.

Traps (:attr:`Simulator.traps`, written to ``<base>.traps.jsonl``):

* ``diurnal``: the swing above, recorded as one trap over the whole run (it
  concerns ``traffic`` alerts only, on any key).
* ``extreme_request``: roughly one isolated extreme request per 12,000 (a 25-40
  s latency or a 15-25k token response, capped at the model's maximum output),
  each recorded with its key and time. They are generated whatever the
  incidents are; those within 10 minutes of an incident on the same key are
  not listed.
* ``planned_ramp`` (auto, ``hours >= 6``): the traffic of one key doubles
  along a 45 minute cosine ramp and stays doubled (a launch); nothing else of
  the key changes.
* ``cold_start`` (auto, ``hours >= 6``): a service/model key absent until then
  (for example ``support-bot/gpt-5-mini``) starts receiving traffic mid-run
  with its own normal distributions; its first hour is the trap.

Injected traps never overlap an incident on the same key (30 minutes apart at
least) and avoid keys that drift.

Incidents (``incidents="auto"``): after a 60 minute warm-up, about one per 40
simulated minutes (at least one of each of the nine types when ``hours >= 6``),
each in its own slot of the run so no two overlap, each 5-20 minutes long
(``coordinated_attack`` exactly 5; a ``drift`` ramp 60 minutes and two slots),
ending at least 7 minutes before the next slot. See :data:`INCIDENT_TYPES`
and :func:`simulator.traffic.incident_effects` for what each does.
``magnitude_scale`` weakens (< 1) or strengthens (> 1) every auto incident in
log terms without changing the schedule: a latency x5 at scale 0.5 is a
latency x5**0.5 = x2.24.

The package, by concern:

* :mod:`simulator.config`: :class:`SimConfig`, the parameters of a run;
* :mod:`simulator.fleet`: models, services, keys, users and the daily rate curve;
* :mod:`simulator.schedule`: the incidents (the seed's schedule or a given list) and their labels;
* :mod:`simulator.traps`: the traps and their records;
* :mod:`simulator.traffic`: the events, built request by request;
* :mod:`simulator.io`: times in and out, the files of a run;
* :mod:`simulator.core`: :class:`Simulator`, which puts them together.

The runtime imports it only for the ``simulator`` source (sources/simulator.py)
and ``sentinel simulate``.
"""

from simulator.config import DEFAULT_START, SimConfig
from simulator.core import Simulator
from simulator.fleet import FLEET, MODELS, SERVICES
from simulator.io import companion_paths, format_ms, format_time, to_epoch
from simulator.schedule import DEFAULT_MAGNITUDE, DRIFT_GRACE_S, DRIFT_METRICS, INCIDENT_TYPES
from simulator.traps import TRAP_KINDS

__all__ = [
    "DEFAULT_MAGNITUDE",
    "DEFAULT_START",
    "DRIFT_GRACE_S",
    "DRIFT_METRICS",
    "FLEET",
    "INCIDENT_TYPES",
    "MODELS",
    "SERVICES",
    "SimConfig",
    "Simulator",
    "TRAP_KINDS",
    "companion_paths",
    "format_ms",
    "format_time",
    "to_epoch",
]
