"""NAB yardstick for the default univariate detector (SPEC section 4).

Runs the shared NAB harness (``run_detector.py`` with ``sentinel_nab.py``, i.e.
``detectors.make_univariate()`` fed one point at a time), prints the three
profile scores next to the published ones, a per-category breakdown at each
profile's optimised threshold, the per-file threshold bound (``nab_bound.py``),
and the speed of ``update()``.

    cd /work/main && /tmp/venv/bin/python benchmarks/nab.py \
        [--nab-dir /work/shared/nab] [--out-dir /tmp/nab_runs] [--jobs 2] \
        [--kwargs '{"...": ...}']
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import sys
import time

PUBLISHED = {
    "ARTime": (80.42, 71.61, 85.46),
    "CAD OSE": (77.16, 74.90, 79.80),
    "Numenta HTM": (72.76, 65.97, 76.87),
    "KNN CAD": (60.40, 43.47, 67.63),
    "Random Cut Forest": (52.41, 42.65, 60.92),
    "Windowed Gaussian": (50.87, 31.13, 59.02),
}
PROFILES = ["standard", "reward_low_FP_rate", "reward_low_FN_rate"]
SHORT = {"standard": "standard", "reward_low_FP_rate": "low FP", "reward_low_FN_rate": "low FN"}


def _load_harness(nab_dir: str):
    sys.path.insert(0, nab_dir)
    import nab_score  # noqa: F401  (the harness imports it by name)
    import run_detector
    return run_detector, nab_score


def category_breakdown(nab_score, corpus, out_dir: str, name: str, res: dict) -> dict:
    """Per category: windows detected / total and false-positive rows, per profile."""
    scores = nab_score.load_scores(out_dir, name, corpus)
    table: dict = {}
    for prof in PROFILES:
        T = res[prof]["threshold"]
        for g, s in zip(corpus.files, scores):
            cat = g.relpath.split("/")[0]
            row = table.setdefault(cat, {}).setdefault(prof, dict(tp=0, windows=0, fp_rows=0))
            det = (s >= T) & g.scorable
            for k in range(g.n_windows):
                in_k = (g.window == k) & g.scorable
                if in_k.any():
                    row["windows"] += 1
                    row["tp"] += int((det & in_k).any())
            row["fp_rows"] += int((det & (g.window < 0)).sum())
    return table


def measure_speed(n: int = 20000) -> float:
    """Points per second of ``update()`` on a noisy daily-seasonal series."""
    import random

    from detectors import make_univariate

    rng = random.Random(7)
    pts = [(1.4e9 + 300.0 * i, 50 + 20 * math.sin(i * 2 * math.pi / 288) + rng.gauss(0, 3))
           for i in range(n)]
    det = make_univariate()
    t0 = time.perf_counter()
    for ts, v in pts:
        det.update(ts, v)
    return n / (time.perf_counter() - t0)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nab-dir", default=os.environ.get("NAB_DIR", "/work/shared/nab"))
    ap.add_argument("--out-dir", default=os.environ.get("NAB_RUN_OUT", "/tmp/nab_runs"))
    ap.add_argument("--name", default="sentinel")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--kwargs", default="{}", help="JSON kwargs for make_univariate()")
    ap.add_argument("--quiet", action="store_true", help="only the summary lines")
    args = ap.parse_args(argv)

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    os.chdir(root)                                   # `detectors` importable by the harness
    if root not in sys.path:
        sys.path.insert(0, root)
    run_detector, nab_score = _load_harness(args.nab_dir)
    adapter = os.path.join(args.nab_dir, "sentinel_nab.py") + ":detect"
    hargs = [adapter, "--name", args.name, "--out-dir", args.out_dir,
             "--nab-dir", args.nab_dir, "--jobs", str(args.jobs), "--kwargs", args.kwargs]
    t0 = time.time()
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        summary = run_detector.main(hargs)
    wall = time.time() - t0
    harness_out = buf.getvalue()
    res = summary["details"]
    sc = summary["scores"]

    print(f"NAB subset, detector '{args.name}' kwargs={args.kwargs}")
    print(f"  standard {sc['standard']:.2f}   low FP {sc['reward_low_FP_rate']:.2f}   "
          f"low FN {sc['reward_low_FN_rate']:.2f}")
    if args.quiet:
        return summary
    print(harness_out.strip().splitlines()[0])
    print(f"\n{'detector':<22}{'standard':>10}{'low FP':>10}{'low FN':>10}")
    rows = dict(PUBLISHED)
    rows[f">> {args.name}"] = tuple(sc[p] for p in PROFILES)
    for det, r in sorted(rows.items(), key=lambda kv: -kv[1][0]):
        print(f"{det:<22}" + "".join(f"{v:>10.2f}" for v in r))

    corpus = nab_score.load_corpus(args.nab_dir)
    table = category_breakdown(nab_score, corpus, args.out_dir, args.name, res)
    print("\nper category at each profile's threshold: windows detected/total, FP rows")
    print(f"{'category':<24}" + "".join(f"{SHORT[p]:>18}" for p in PROFILES))
    for cat, r in table.items():
        print(f"{cat:<24}" + "".join(
            f"{r[p]['tp']:>6}/{r[p]['windows']:<3}{r[p]['fp_rows']:>5} fp  " for p in PROFILES))
    print("thresholds: " + ", ".join(f"{SHORT[p]} {res[p]['threshold']:.4g}" for p in PROFILES))
    from nab_bound import bounds
    bound = bounds(nab_score, corpus, nab_score.load_scores(args.out_dir, args.name, corpus), res)
    print("with the best threshold for each file (labels known, an upper bound for any "
          "per-series recalibration): " + ", ".join(f"{SHORT[p]} {bound[p]:.2f}" for p in PROFILES))

    pps = measure_speed()
    print(f"\nspeed: update() {pps:,.0f} points/s single core; harness {summary['points']} "
          f"points in {summary['detect_wall_s']:.1f}s wall with --jobs {args.jobs} "
          f"({1e6 * summary['detect_cpu_s'] / summary['points']:.1f} us/point incl. I/O); "
          f"total {wall:.1f}s")
    summary["categories"] = table
    summary["per_file_threshold_bound"] = bound
    summary["update_points_per_s"] = pps
    with open(os.path.join(args.out_dir, args.name, "nab_scores.json"), "w") as f:
        json.dump(summary, f, indent=2)
    return summary


if __name__ == "__main__":
    main()
