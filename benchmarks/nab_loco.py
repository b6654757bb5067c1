"""NAB by leave-one-category-out (LOCO): how much of the score is tuning.

A small grid of ``make_univariate()`` settings is run once over the NAB subset
(through the shared harness, one ``(timestamp, value)`` at a time, as
``benchmarks/nab.py`` does); every (setting, file) output is kept as a CSV under
``--out-dir`` and reused on later runs while the detector's source is unchanged.
Then, for each profile and each category C of ``NAB_DIR/data``:

* the grid point with the best NAB score on the *other* categories (NAB's own
  normalised score over those files, threshold optimised on them) is chosen;
* C's files are scored with that setting's outputs.

The LOCO figure is NAB's normalised score over all files, each file carrying
the outputs of the setting chosen without its category (threshold optimised
over the whole corpus, as NAB does for every detector). A stricter variant also
takes the threshold from the other categories. Both are printed next to the
default ``make_univariate()`` and the in-sample best grid point (the one with
the best score on everything).

    cd /work/main && .venv/bin/python benchmarks/nab_loco.py \
        [--nab-dir /work/shared/nab] [--out-dir /tmp/nab_loco] [--jobs 2] \
        [--grid '{"window": [1000, 2000, 5000], ...}'] [--rerun]
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import sys
import time
from multiprocessing import Pool

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if HERE not in sys.path:
    sys.path.insert(0, HERE)
import nab as nabbench  # noqa: E402  (benchmarks/nab.py)

PROFILES = nabbench.PROFILES
SHORT = nabbench.SHORT

# The knobs the earlier sweeps (NAB_NOTES.md) found the score most sensitive to:
# the rank window (history behind every tail probability; 5000 helped low FP),
# the drift mean's span(s) and the time-of-day profile's resolution(s). The
# season and drift channels average their surprise over several scales (a list
# value); the grid offers the single scale of the earlier default, the default
# pair, and one other pair. smax only rescales the score (NAB optimises the
# threshold), rest/damp/warmup/season_alpha moved it by less. `--grid '{}'`
# scores the default alone: with nothing chosen, LOCO is the in-sample score.
DEFAULT_GRID = {
    "window": [1000, 2000, 5000],
    "drift_span": [64, [32, 64], [64, 256]],
    "bins": [48, [48, 96]],
}
SOURCES = ["detectors/__init__.py", "detectors/univariate.py"]


def grid_settings(grid: dict) -> list:
    """Every combination of the grid, as kwargs dicts, in a fixed order."""
    keys = sorted(grid)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]


def setting_label(kw: dict) -> str:
    return " ".join(f"{k}={_text(v)}" for k, v in sorted(kw.items())) or "defaults"


def _text(v) -> str:
    if isinstance(v, (list, tuple)):
        return "/".join(_text(x) for x in v)
    return f"{v:g}" if isinstance(v, float) else str(v)


def canonical(v):
    """A knob's value for comparison: 64, 64.0 and [64] alike, lists as tuples of floats."""
    if isinstance(v, (list, tuple)):
        return tuple(float(x) for x in v) if len(v) != 1 else float(v[0])
    return float(v) if isinstance(v, (int, float)) else v


def run_name(kw: dict) -> str:
    """Results-directory name for a setting (NAB forbids '_' in detector names)."""
    return "loco" + hashlib.sha1(json.dumps(kw, sort_keys=True).encode()).hexdigest()[:10]


def source_digest(nab_dir: str) -> str:
    h = hashlib.sha256()
    for p in [os.path.join(ROOT, s) for s in SOURCES] + [os.path.join(nab_dir, "sentinel_nab.py")]:
        with open(p, "rb") as f:
            h.update(f.read())
    return h.hexdigest()


def category(relpath: str) -> str:
    return relpath.split("/")[0]


# --------------------------------------------------------------------------- #
# Detector runs (cached per setting and file)
# --------------------------------------------------------------------------- #
def run_grid(run_detector, nab_dir: str, out_dir: str, settings: list, jobs: int,
             rerun: bool = False) -> dict:
    """Run every setting not already cached; returns {'ran': n, 'cached': n, 'wall_s': s}."""
    with open(os.path.join(nab_dir, "labels", "combined_windows.json")) as f:
        labels = json.load(f)
    files = sorted(labels)
    sizes = {f: os.path.getsize(os.path.join(nab_dir, "data", f)) for f in files}
    digest = source_digest(nab_dir)
    adapter = os.path.join(nab_dir, "sentinel_nab.py") + ":detect"
    todo, stamps = [], []
    for kw in settings:
        name = run_name(kw)
        stamp = os.path.join(out_dir, name, "setting.json")
        meta = {"kwargs": kw, "source_sha256": digest, "files": files}
        if not rerun and os.path.exists(stamp):
            with open(stamp) as f:
                if json.load(f) == meta:
                    continue
        if os.path.exists(stamp):
            os.remove(stamp)
        stamps.append((stamp, meta))
        todo += [(adapter, kw, nab_dir, f, labels[f], out_dir, name, True, False, 0)
                 for f in files]
    todo.sort(key=lambda j: -sizes[j[3]])            # biggest first: better packing
    t0 = time.time()
    if todo:
        if jobs > 1:
            with Pool(jobs) as pool:
                pool.map(run_detector._run_file, todo, chunksize=1)
        else:
            for j in todo:
                run_detector._run_file(j)
    for stamp, meta in stamps:                        # only once all its files exist
        with open(stamp, "w") as f:
            json.dump(meta, f)
    return {"ran": len(stamps), "cached": len(settings) - len(stamps),
            "wall_s": time.time() - t0}


# --------------------------------------------------------------------------- #
# Scoring on parts of the corpus
# --------------------------------------------------------------------------- #
class Scorer:
    """NAB's scorer (the shared ``nab_score``) on any subset of the corpus's files."""

    def __init__(self, nab_score, corpus):
        self.ns = nab_score
        self.corpus = corpus
        self.profiles = nab_score.load_profiles(corpus.nab_dir)
        self._null: dict = {}

    def subset(self, idx: list):
        files = [self.corpus.files[i] for i in idx]
        return self.ns.Corpus(self.corpus.nab_dir, self.corpus.windows_path, files,
                              sum(g.n_windows for g in files))

    def null(self, idx: tuple, profile: str) -> float:
        key = (idx, profile)
        if key not in self._null:
            self._null[key] = self.ns.null_baseline(self.subset(list(idx)),
                                                    self.profiles[profile])
        return self._null[key]

    def score(self, idx: list, scores: list, profile: str, threshold: float | None = None) -> dict:
        """NAB score of files ``idx`` (``scores`` aligned with them).

        ``threshold=None`` optimises it on these files, as NAB does.
        """
        sub = self.subset(idx)
        cm = self.profiles[profile]
        flat = self.ns._Flat(sub, scores)
        if threshold is None:
            thr, sc, *_ = self.ns._sweep(flat, cm)
            threshold = float(thr[int(np.argmax(sc))])   # first max = highest threshold
        raw, per_file, counts = self.ns._score_at(flat, cm, threshold, len(idx))
        base = self.null(tuple(idx), profile)
        perfect = sub.n_label_windows * cm["tpWeight"]
        norm = 100.0 * (raw - base) / (perfect - base) if perfect != base else float("nan")
        return dict(score=norm, raw=raw, threshold=threshold, base=base, perfect=perfect,
                    per_file=per_file, **counts)


def loco(scorer: Scorer, scores: list, profile: str) -> dict:
    """Leave-one-category-out selection for one profile.

    ``scores[k][i]`` is setting k's output on corpus file i. Returns the in-sample
    scores of every setting, the pick and its training score per category, and
    the LOCO totals (NAB threshold over all files; threshold from the other
    categories too).
    """
    files = scorer.corpus.files
    n = len(files)
    everything = list(range(n))
    cats = sorted({category(g.relpath) for g in files})
    full = [scorer.score(everything, s, profile) for s in scores]
    picks, pick_of_file = {}, [None] * n
    strict_raw = 0.0
    for c in cats:
        held = [i for i in everything if category(files[i].relpath) == c]
        train = [i for i in everything if category(files[i].relpath) != c]
        train_res = [scorer.score(train, [s[i] for i in train], profile) for s in scores]
        k = int(np.argmax([r["score"] for r in train_res]))   # ties: first in grid order
        T = train_res[k]["threshold"]
        held_fixed = scorer.score(held, [scores[k][i] for i in held], profile, threshold=T)
        strict_raw += held_fixed["raw"]
        picks[c] = dict(setting=k, train_score=train_res[k]["score"], train_threshold=T,
                        train_scores=[r["score"] for r in train_res],
                        held_raw_at_train_threshold=held_fixed["raw"])
        for i in held:
            pick_of_file[i] = k
    assembled = [scores[pick_of_file[i]][i] for i in everything]
    total = scorer.score(everything, assembled, profile)
    base, perfect = total["base"], total["perfect"]
    strict = 100.0 * (strict_raw - base) / (perfect - base)
    for c in cats:
        held = [i for i in everything if category(files[i].relpath) == c]
        picks[c]["held_raw"] = float(sum(total["per_file"][i] for i in held))
        picks[c]["n_files"] = len(held)
        picks[c]["windows"] = sum(files[i].n_windows for i in held)
    best = int(np.argmax([r["score"] for r in full]))
    return dict(full=full, best=best, picks=picks, pick_of_file=pick_of_file,
                total=total, strict=strict)


def category_raw(scorer: Scorer, res: dict) -> dict:
    """Raw NAB score per category from a whole-corpus ``Scorer.score`` result."""
    out: dict = {}
    for g, v in zip(scorer.corpus.files, res["per_file"]):
        out[category(g.relpath)] = out.get(category(g.relpath), 0.0) + float(v)
    return out


# --------------------------------------------------------------------------- #
def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nab-dir", default=os.environ.get("NAB_DIR", "/work/shared/nab"))
    ap.add_argument("--out-dir", default=os.environ.get("NAB_LOCO_OUT", "/tmp/nab_loco"))
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--grid", default=json.dumps(DEFAULT_GRID),
                    help="JSON {kwarg: [values]} for make_univariate(); the full product is run")
    ap.add_argument("--rerun", action="store_true", help="ignore cached detector outputs")
    args = ap.parse_args(argv)
    nab_dir = os.path.abspath(args.nab_dir)
    out_dir = os.path.abspath(args.out_dir)

    os.chdir(ROOT)                                   # `detectors` importable by the harness
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    run_detector, nab_score = nabbench._load_harness(nab_dir)

    grid = json.loads(args.grid)
    settings = grid_settings(grid)
    from detectors.univariate import UnivariateDetector
    defaults = {k: getattr(UnivariateDetector(), k) for k in grid}
    # the default detector is always scored: the grid point equal to the defaults, or {}
    default_k = next((k for k, kw in enumerate(settings)
                      if {a: canonical(v) for a, v in kw.items()}
                      == {a: canonical(v) for a, v in defaults.items()}), None)
    if default_k is None:
        settings.append({})
        default_k = len(settings) - 1

    run = run_grid(run_detector, nab_dir, out_dir, settings, args.jobs, args.rerun)
    print(f"NAB LOCO: {len(settings)} settings of make_univariate() "
          f"(grid {json.dumps(grid)}; defaults {json.dumps(defaults)})")
    print(f"  detector runs: {run['ran']} settings run in {run['wall_s']:.1f}s wall "
          f"(--jobs {args.jobs}), {run['cached']} cached in {out_dir}")

    corpus = nab_score.load_corpus(nab_dir)
    scores = [nab_score.load_scores(out_dir, run_name(kw), corpus) for kw in settings]
    scorer = Scorer(nab_score, corpus)
    results = {p: loco(scorer, scores, p) for p in PROFILES}
    cats = sorted(results["standard"]["picks"])

    print(f"\n{'setting':<44}" + "".join(f"{SHORT[p]:>10}" for p in PROFILES))
    for k, kw in enumerate(settings):
        mark = " (default)" if k == default_k else ""
        print(f"{setting_label(kw) + mark:<44}" + "".join(
            f"{results[p]['full'][k]['score']:>10.2f}" for p in PROFILES))

    for p in PROFILES:
        r = results[p]
        dflt = category_raw(scorer, r["full"][default_k])
        print(f"\n{SHORT[p]}: per held-out category, the setting picked on the other "
              "categories (its score there), and the category's raw NAB score "
              "(default -> LOCO run)")
        for c in cats:
            pk = r["picks"][c]
            print(f"  {c:<22} {setting_label(settings[pk['setting']]):<34} "
                  f"train {pk['train_score']:6.2f}   raw {dflt[c]:7.2f} -> {pk['held_raw']:7.2f}"
                  f"   ({pk['n_files']} files, {pk['windows']} windows)")

    print(f"\n{'NAB subset, normalised score':<58}" + "".join(f"{SHORT[p]:>10}" for p in PROFILES))
    rows = [
        ("default make_univariate()", [results[p]["full"][default_k]["score"] for p in PROFILES]),
        ("in-sample best grid point (per profile)",
         [results[p]["full"][results[p]["best"]]["score"] for p in PROFILES]),
        ("LOCO (setting from the other categories)",
         [results[p]["total"]["score"] for p in PROFILES]),
        ("LOCO, threshold also from the other categories",
         [results[p]["strict"] for p in PROFILES]),
    ]
    for label, vals in rows:
        print(f"{label:<58}" + "".join(f"{v:>10.2f}" for v in vals))
    print("in-sample best: " + "; ".join(
        f"{SHORT[p]} {setting_label(settings[results[p]['best']])}" for p in PROFILES))
    for p in PROFILES:
        chosen = sorted({results[p]["picks"][c]["setting"] for c in cats})
        print(f"LOCO picks ({SHORT[p]}): " + ", ".join(
            f"{setting_label(settings[k])} x{sum(results[p]['picks'][c]['setting'] == k for c in cats)}"
            for k in chosen))

    summary = {
        "grid": grid, "settings": settings, "default_index": default_k,
        "source_sha256": source_digest(nab_dir),
        "profiles": {p: {
            "in_sample": [r["score"] for r in results[p]["full"]],
            "thresholds": [r["threshold"] for r in results[p]["full"]],
            "best": results[p]["best"],
            "default": results[p]["full"][default_k]["score"],
            "loco": results[p]["total"]["score"],
            "loco_threshold": results[p]["total"]["threshold"],
            "loco_strict": results[p]["strict"],
            "picks": {c: {k: v for k, v in pk.items()} for c, pk in results[p]["picks"].items()},
            "default_category_raw": category_raw(scorer, results[p]["full"][default_k]),
        } for p in PROFILES},
    }
    with open(os.path.join(out_dir, "nab_loco.json"), "w") as f:
        json.dump(summary, f, indent=2)
    print(f"\nwrote {os.path.join(out_dir, 'nab_loco.json')}")
    return summary


if __name__ == "__main__":
    main()
