"""How far a better threshold could take a NAB run: the per-file threshold bound.

NAB picks one threshold per profile for the whole corpus. This script scores a
finished run (the CSVs that ``benchmarks/nab.py`` or the shared harness wrote)
twice: as NAB does, and with every file given its own best threshold, chosen
with the labels (an oracle no detector has). The second figure bounds what any
per-series recalibration of the same scores (a monotone map per file) can
reach; below the target, the ranking of points within the files has to change,
not their scale.

    python benchmarks/nab.py --out-dir /tmp/nab_runs      # writes the run
    python benchmarks/nab_bound.py --out-dir /tmp/nab_runs [--name sentinel]
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

PROFILES = ["standard", "reward_low_FP_rate", "reward_low_FN_rate"]


def per_file_bound(nab_score, corpus, scores: list, cm: dict) -> float:
    """Raw NAB score when each file is swept on its own (best threshold per file).

    Uses the shared scorer's own sweep (``_Flat``, ``_sweep``) on a one-file corpus.
    """
    total = 0.0
    for g, s in zip(corpus.files, scores):
        one = nab_score.Corpus(corpus.nab_dir, corpus.windows_path, [g], g.n_windows)
        flat = nab_score._Flat(one, [s])
        _thr, sc, *_ = nab_score._sweep(flat, cm)
        total += float(np.max(sc))
    return total


def bounds(nab_score, corpus, scores: list, res: dict) -> dict:
    """Normalised per-file threshold bound per profile; ``res`` is ``score_detector``'s result."""
    profiles = nab_score.load_profiles(corpus.nab_dir)
    out = {}
    for p in PROFILES:
        raw = per_file_bound(nab_score, corpus, scores, profiles[p])
        base, perfect = res[p]["baseline"], res[p]["perfect"]
        out[p] = 100.0 * (raw - base) / (perfect - base)
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nab-dir", default=os.environ.get("NAB_DIR", "../shared/nab"))
    ap.add_argument("--out-dir", default=os.environ.get("NAB_RUN_OUT", "/tmp/nab_runs"))
    ap.add_argument("--name", default="sentinel")
    args = ap.parse_args(argv)
    sys.path.insert(0, os.path.abspath(args.nab_dir))
    import nab_score

    corpus = nab_score.load_corpus(os.path.abspath(args.nab_dir))
    res = nab_score.score_detector(corpus, args.out_dir, args.name)
    bound = bounds(nab_score, corpus, nab_score.load_scores(args.out_dir, args.name, corpus), res)
    print(f"NAB subset, run '{args.name}' in {args.out_dir}")
    print(f"{'profile':<20}{'NAB (one threshold)':>22}{'best threshold per file':>26}")
    for p in PROFILES:
        print(f"{p:<20}{res[p]['score']:>22.2f}{bound[p]:>26.2f}")
    return {p: {"score": res[p]["score"], "per_file_bound": bound[p]} for p in PROFILES}


if __name__ == "__main__":
    main()
