"""NAB: how the season and drift channels combine over scales, chosen by leave-one-category-out.

Records, once per NAB file, each channel's surprise (``-log10 p``, before the maximum and
the de-duplication) of ``detectors/univariate.py`` at many scales: the level at rank
windows 500-5000, the time-of-day residual at 24/48/96 buckets a day, the drift mean at
spans 16-256 (``--out-dir``, reused while the detector's source is unchanged). Then builds,
offline, every design of a family: per channel, the mean, minimum or median of the
surprises over a set of scales, the maximum over the three channels, and the detector's
own clipping and de-duplication (rest 50, damp 0.5). It scores each with NAB's scorer and
runs the LOCO selection of ``nab_loco.py`` over the designs: the honest figure for a
design picked from this list. The single-scale design at window 2000, 48 buckets and span
64 reproduces the old default's outputs exactly (67.54); 48+96 buckets with spans 32+64,
averaged, is the current default's (68.97).

    cd /work/main && .venv/bin/python benchmarks/nab_scales.py [--out-dir /tmp/nab_scales] [--jobs 2]
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import math
import os
import sys
from collections import deque
from multiprocessing import Pool

import numpy as np
import pandas as pd

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for p in (HERE, ROOT):
    if p not in sys.path:
        sys.path.insert(0, p)
import nab_loco  # noqa: E402
from detectors.univariate import _RankWindow  # noqa: E402

WINDOWS = [500, 1000, 2000, 5000]
BINS = [24, 48, 96]
SPANS = [16, 32, 64, 128, 256]
WARMUP, PERIOD, ALPHA, SMAX, REST, DAMP = 50, 86400.0, 0.1, 8.0, 50, 0.5


def channel_names() -> list:
    return ([f"L{w}" for w in WINDOWS] + [f"S{b}_{w}" for b in BINS for w in WINDOWS]
            + [f"D{s}_{w}" for s in SPANS for w in WINDOWS])


def record(job) -> str:
    """Every channel's surprise per point of one file (NaN where the channel is not ready)."""
    nab_dir, rel, dst = job
    df = pd.read_csv(os.path.join(nab_dir, "data", rel), dtype={"timestamp": str})
    ts = pd.to_datetime(df["timestamp"]).to_numpy(dtype="datetime64[ns]").astype("int64") / 1e9
    xs = df["value"].to_numpy(float)
    out = np.full((len(channel_names()), len(xs)), np.nan)
    level = [_RankWindow(w) for w in WINDOWS]
    season = {b: [None] * b for b in BINS}
    resid_w = {b: [_RankWindow(w) for w in WINDOWS] for b in BINS}
    mean = {s: None for s in SPANS}
    drift_w = {s: [_RankWindow(w) for w in WINDOWS] for s in SPANS}
    for n, (t, x) in enumerate(zip(ts.tolist(), xs.tolist())):
        floor, warm, row = 1e-9 * (1.0 + abs(x)), n >= WARMUP, 0
        for r in level:
            if warm:
                out[row, n] = r.surprise_two_sided(x, floor)
            row += 1
        slots = {}
        for b in BINS:
            pos = (t % PERIOD) / PERIOD * b - 0.5
            i = math.floor(pos)
            f = pos - i
            lo, hi = season[b][i % b], season[b][(i + 1) % b]
            resid = None if lo is None or hi is None else abs(x - (lo + f * (hi - lo)))
            slots[b] = (i, f, resid)
            for r in resid_w[b]:
                if warm and resid is not None and len(r) >= WARMUP:
                    out[row, n] = r.surprise_upper(resid, floor)
                row += 1
        drifts = {}
        for s in SPANS:
            d = (x if mean[s] is None else mean[s] + (x - mean[s]) / s) if warm else None
            drifts[s] = d
            for r in drift_w[s]:
                if warm and len(r) >= WARMUP:
                    out[row, n] = r.surprise_two_sided(d, floor)
                row += 1
        for r in level:
            r.add(x)
        for s in SPANS:
            if drifts[s] is not None:
                for r in drift_w[s]:
                    r.add(drifts[s])
                mean[s] = drifts[s]
        for b in BINS:
            i, f, resid = slots[b]
            if resid is not None:
                for r in resid_w[b]:
                    r.add(resid)
            prof = season[b]
            for j, w in ((i % b, 1.0 - f), ((i + 1) % b, f)):
                prof[j] = x if prof[j] is None else prof[j] + ALPHA * w * (x - prof[j])
    np.save(dst, out)
    return rel


def finish(s: np.ndarray) -> np.ndarray:
    """The detector's clipping, de-duplication and scaling of a surprise series."""
    out = np.zeros(len(s))
    recent: deque = deque()
    for n in range(WARMUP, len(s)):
        v = min(float(s[n]), SMAX)
        prev = max(recent) if recent else 0.0
        recent.append(v)
        if len(recent) > REST:
            recent.popleft()
        out[n] = min(1.0, (v if v > prev else DAMP * v) / SMAX)
    return out


def combine(chans: np.ndarray, idx: dict, how: str, bins, spans, windows) -> np.ndarray:
    reduce = {"mean": np.nanmean, "min": np.nanmin, "median": np.nanmedian}[how]
    parts = []
    for names in ([f"L{w}" for w in windows], [f"S{b}_{w}" for b in bins for w in windows],
                  [f"D{s}_{w}" for s in spans for w in windows]):
        a = chans[[idx[nm] for nm in names]]
        with np.errstate(all="ignore"):
            ok = ~np.isnan(a).all(axis=0)
            r = np.zeros(a.shape[1])
            if ok.any():
                r[ok] = reduce(a[:, ok], axis=0)
        parts.append(r)
    return finish(np.max(parts, axis=0))


FAMILY = {
    "bins": [[48], [48, 96], [24, 48, 96], [24, 48]],
    "spans": [[64], [32, 64], [64, 128], [32, 64, 128], [64, 256], [16, 64]],
    "windows": [[2000], [1000, 2000, 5000], [1000, 2000]],
}


def designs() -> list:
    """(how, bins, spans, windows): the designs scored (146; several windows only with at
    most two bins and two spans)."""
    out = []
    for how in ("mean", "min", "median"):
        for bins, spans, windows in itertools.product(*FAMILY.values()):
            single = len(bins) == len(spans) == len(windows) == 1
            if single and how != "mean":
                continue                  # one scale: the three reductions agree
            if len(windows) > 1 and (len(bins) > 2 or len(spans) > 2):
                continue
            if how == "median" and len(windows) == 1 and len(bins) <= 2 and len(spans) <= 2:
                continue                  # the median of two is their mean
            out.append((how, tuple(bins), tuple(spans), tuple(windows)))
    return out


def label(d) -> str:
    how, bins, spans, windows = d
    return f"{how} bins {'/'.join(map(str, bins))} spans {'/'.join(map(str, spans))} " \
           f"window {'/'.join(map(str, windows))}"


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nab-dir", default=os.environ.get("NAB_DIR", "/work/shared/nab"))
    ap.add_argument("--out-dir", default="/tmp/nab_scales")
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args(argv)
    run_detector, nab_score = nab_loco.nabbench._load_harness(args.nab_dir)
    corpus = nab_score.load_corpus(args.nab_dir)
    h = hashlib.sha256(open(os.path.join(ROOT, "detectors", "univariate.py"), "rb").read())
    h.update(open(__file__, "rb").read())
    cache = os.path.join(args.out_dir, h.hexdigest()[:12])
    os.makedirs(cache, exist_ok=True)
    paths = {g.relpath: os.path.join(cache, g.relpath.replace("/", "__") + ".npy")
             for g in corpus.files}
    todo = [(args.nab_dir, rel, p) for rel, p in paths.items() if not os.path.exists(p)]
    todo.sort(key=lambda j: -os.path.getsize(os.path.join(args.nab_dir, "data", j[1])))
    with Pool(args.jobs) as pool:
        list(pool.imap_unordered(record, todo))
    idx = {nm: i for i, nm in enumerate(channel_names())}
    chans = [np.load(paths[g.relpath]) for g in corpus.files]
    ds = designs()
    outputs = [[combine(c, idx, *d) for c in chans] for d in ds]
    scorer = nab_loco.Scorer(nab_score, corpus)
    everything = list(range(len(corpus.files)))
    cats = sorted({nab_loco.category(g.relpath) for g in corpus.files})
    old = ds.index(("mean", (48,), (64,), (2000,)))
    new = ds.index(("mean", (48, 96), (32, 64), (2000,)))

    print(f"{'design':<52}" + "".join(f"{nab_loco.SHORT[p]:>9}" for p in nab_loco.PROFILES)
          + "   standard raw per category, minus the single-scale design")
    base = nab_loco.category_raw(scorer, scorer.score(everything, outputs[old], "standard"))
    full = {p: [scorer.score(everything, o, p)["score"] for o in outputs] for p in nab_loco.PROFILES}
    for k in sorted(range(len(ds)), key=lambda k: -full["standard"][k]):
        raw = nab_loco.category_raw(scorer, scorer.score(everything, outputs[k], "standard"))
        print(f"{label(ds[k]):<52}" + "".join(f"{full[p][k]:9.2f}" for p in nab_loco.PROFILES)
              + "   " + " ".join(f"{raw[c] - base[c]:+5.2f}" for c in cats))

    families = {
        "the single-scale design and the default": [old, new],
        "mean over scales, window 2000": [k for k, d in enumerate(ds) if d[0] == "mean" and d[3] == (2000,)],
        "mean over scales, any windows": [k for k, d in enumerate(ds) if d[0] == "mean"],
        f"all {len(ds)} designs": list(range(len(ds))),
    }
    print(f"\nLOCO over a family of designs{'':<40}" + "".join(f"{nab_loco.SHORT[p]:>9}" for p in nab_loco.PROFILES))
    summary = {}
    for name, ks in families.items():
        res = {p: nab_loco.loco(scorer, [outputs[k] for k in ks], p) for p in nab_loco.PROFILES}
        summary[name] = {p: dict(loco=r["total"]["score"], strict=r["strict"],
                                 best=label(ds[ks[r["best"]]]),
                                 picks={c: label(ds[ks[r["picks"][c]["setting"]]]) for c in cats})
                         for p, r in res.items()}
        print(f"{name + f' ({len(ks)})':<69}" + "".join(f"{res[p]['total']['score']:9.2f}" for p in nab_loco.PROFILES)
              + "   strict " + " ".join(f"{res[p]['strict']:.2f}" for p in nab_loco.PROFILES))
        print("    picks (standard): " + "; ".join(sorted({summary[name]['standard']['picks'][c] for c in cats})))
    with open(os.path.join(args.out_dir, "nab_scales.json"), "w") as f:
        json.dump(summary, f, indent=2)
    return summary


if __name__ == "__main__":
    main()
