"""Token abuse alone over scenario-family worlds: its pages matched to the labels, the false ones named.

Each world of benchmarks/world.py, or of benchmarks/crossworld.py with ``--split cross``
(written once, cached where benchmarks/families.py caches it), is read in time order.
Per service, its requests are counted into one-minute windows of ``{actor: [tokens,
requests, model, weight]}`` (an actor is ``user:<id>``, else ``tenant:<id>``, as in
the flow) and each closed window goes to one
:class:`detectors.actor_tokens.ServiceActors`, with the flow's defaults or the
settings of ``--set``. No flow runs, so a token-abuse change can be measured on many
worlds in a minute: on these worlds its pages are the flow's (checked on 1601-1603 and
1701-1703: the same 5 and 11 true pages, the same 4 and 4 false ones).

A page is true when a token_abuse label of the same service and subject holds its time
(until 5 minutes after the label's end, as benchmarks/scoring.py allows). Printed:
labels caught, true pages, false pages, and with ``-v`` each false page (world, service,
actor, time, tokens over the alert's expected, requests in the horizon, the actor's own
usual and the service's heavy level, and the trap it fell in, if any).

    python benchmarks/actor_replay.py --split tune                      # tune worlds, seeds 1,2,3
    python benchmarks/actor_replay.py --split test --seeds 1801,1802,1803 -v
    python benchmarks/actor_replay.py --split test --set heavy_ratio=6 --set ratio=5
    python benchmarks/actor_replay.py --split cross --seeds 31,32,33,34,35,36 -v
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime, timezone
from typing import Any, Dict, List, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
if ROOT not in sys.path:
    sys.path.insert(1, ROOT)

import orjson  # noqa: E402

import families  # noqa: E402
import world  # noqa: E402
from detectors.actor_tokens import ServiceActors, add_request  # noqa: E402
from sentinel.core.times import to_epoch  # noqa: E402

GRACE_S = 300.0


def _hhmm(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%H:%M")


def generate(job: Tuple[str, str, int, float, str]) -> str:
    """The world's files (cached as benchmarks/families.py caches them); their base path."""
    workdir, family, seed, hours, data_dir = job
    base = families.data_base(workdir, families.family_fingerprint(family), family, seed, hours)
    os.makedirs(os.path.dirname(base), exist_ok=True)
    families.generate((base, family, seed, hours, data_dir))
    return base


def replay(job: Tuple[str, Dict[str, Any]]) -> Dict[str, Any]:
    """Token abuse over one world: labels caught, true pages, false pages."""
    base, settings = job
    dets: Dict[str, ServiceActors] = {}
    current: Dict[str, list] = {}  # service -> [window start, actors]
    pages: List[tuple] = []

    def close(service: str, start: float, actors: Dict[str, list]) -> None:
        det = dets.get(service)
        if det is None:
            det = dets[service] = ServiceActors(**settings)
        for f in det.close_window(start, actors):
            if f.status == "firing":
                pages.append((service, f.actor, f.window_end, f.tokens / max(f.expected, 1.0), f.requests,
                              f.habit, f.heavy))

    requests = []  # (time, service, actor, tokens, model); in time order below (crossworld's files are not)
    with open(base + ".jsonl", "rb") as fh:
        for line in fh:
            ev = orjson.loads(line)
            if ev.get("event_type") != "llm.request":
                continue
            user, tenant = ev.get("user_id"), ev.get("tenant_id")
            actor = ("user:" + user) if user else ("tenant:" + tenant) if tenant else None
            if actor is None:
                continue
            requests.append((to_epoch(ev["timestamp"]), ev["service"], actor,
                             (ev.get("input_tokens") or 0) + (ev.get("output_tokens") or 0), ev["model"]))
    requests.sort(key=lambda r: r[0])
    for t, service, actor, tokens, model in requests:
        start = t - t % 60.0
        cur = current.get(service)
        if cur is None or cur[0] != start:
            if cur is not None:
                close(service, cur[0], cur[1])
            cur = current[service] = [start, {}]
        add_request(cur[1], actor, tokens, model)
    for service, cur in current.items():
        close(service, cur[0], cur[1])

    with open(base + ".labels.jsonl") as f:
        labels = [lab for lab in map(json.loads, f) if lab["type"] == "token_abuse"]
    with open(base + ".traps.jsonl") as f:
        traps = [json.loads(line) for line in f]
    name = os.path.basename(base)
    caught, true_pages, false_pages = set(), 0, []
    for service, actor, t, ratio, requests, own, heavy in pages:
        hit = [lab for lab in labels if lab["service"] == service and lab.get("subject") == actor
               and to_epoch(lab["start"]) <= t <= to_epoch(lab["end"]) + GRACE_S]
        if hit:
            true_pages += 1
            caught.add(hit[0]["id"])
            continue
        who = actor.split(":", 1)[1]
        kinds = [tr["kind"] for tr in traps if tr["service"] == service and who in (tr.get("detail") or "")
                 and to_epoch(tr["start"]) - 600 <= t <= to_epoch(tr["end"]) + 600]
        false_pages.append((name, service, actor, _hhmm(t), round(ratio, 2), requests, round(own), round(heavy),
                            kinds))
    return {"world": name, "labels": len(labels), "caught": len(caught), "true_pages": true_pages,
            "false_pages": false_pages, "missed": sorted(lab["id"] for lab in labels if lab["id"] not in caught)}


def _setting(text: str) -> Tuple[str, Any]:
    key, _, value = text.partition("=")
    if not key or not value:
        raise argparse.ArgumentTypeError(f"--set takes KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--set {key}: {value!r} is not a number") from None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--split", choices=("tune", "test", "cross"), default="tune",
                    help="tune or test families, or cross: the worlds of crossworld.py with and without incidents")
    ap.add_argument("--seeds", help="comma-separated seeds (default: the split's)")
    ap.add_argument("--families", help="comma-separated family names (default: every family of the split)")
    ap.add_argument("--hours", type=float, default=24.0)
    ap.add_argument("--set", dest="settings", action="append", type=_setting, default=[],
                    help="KEY=VALUE for ServiceActors (e.g. heavy_ratio=6); repeatable")
    ap.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "sentinel-families"))
    ap.add_argument("--data-dir", default=os.path.join(ROOT, "..", "shared", "data"))
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("-v", "--verbose", action="store_true", help="list every false page")
    args = ap.parse_args()
    if args.split == "cross":
        seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else list(families.CROSS_SEEDS)
        fams = [f for f in families.CROSS_FAMILIES if not args.families or f in args.families.split(",")]
    else:
        seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else list(world.seeds_of(args.split))
        fams = [f for f in world.list_families(args.split) if not args.families or f in args.families.split(",")]
    settings = dict(args.settings)
    try:
        ServiceActors(**settings)
    except TypeError as ex:
        ap.error(f"--set: {ex}")
    jobs = [(args.workdir, fam, seed, args.hours, args.data_dir) for fam in fams for seed in seeds]
    with ProcessPoolExecutor(max(1, args.jobs)) as ex:
        bases = list(ex.map(generate, jobs))
        runs = list(ex.map(replay, [(b, settings) for b in bases]))
    labels = sum(r["labels"] for r in runs)
    caught = sum(r["caught"] for r in runs)
    true_pages = sum(r["true_pages"] for r in runs)
    false_pages = [p for r in runs for p in r["false_pages"]]
    print(f"token abuse, {args.split} {','.join(map(str, seeds))} ({len(runs)} worlds), settings {settings or 'default'}: "
          f"labels caught {caught}/{labels}, true pages {true_pages}, false pages {len(false_pages)}")
    if args.verbose:
        for p in false_pages:
            print("  false:", *p)
        print("  missed:", *[m for r in runs for m in r["missed"]])
    return 0


if __name__ == "__main__":
    sys.exit(main())
