"""Leave-one-category-out selection (benchmarks/nab_loco.py) on a synthetic corpus.

Uses NAB's scorer (``NAB_DIR``, default ``../shared/nab`` beside the repository) but no
detector runs: the per-setting outputs are made up, so the picks are known.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
NAB_DIR = os.environ.get("NAB_DIR", str(ROOT.parent / "shared" / "nab"))
if not os.path.exists(os.path.join(NAB_DIR, "nab_score.py")):
    pytest.skip(f"no NAB scorer in {NAB_DIR}", allow_module_level=True)
for p in (str(ROOT / "benchmarks"), NAB_DIR):
    if p not in sys.path:
        sys.path.insert(0, p)

import nab_loco  # noqa: E402
import nab_score  # noqa: E402

N, W0, W1 = 200, 100, 119          # rows per file; the one labelled window's rows
CATS = ["catA", "catB", "catC"]


def corpus():
    ts = (np.datetime64("2020-01-01T00:00") + np.arange(N) * np.timedelta64(5, "m")
          ).astype("datetime64[ns]")
    window = [[str(ts[W0]), str(ts[W1])]]
    c = nab_score.Corpus(NAB_DIR, "synthetic")
    for cat in CATS:
        for j in range(2):
            c.files.append(nab_score.file_geometry(f"{cat}/f{j}.csv", ts, window))
            c.n_label_windows += 1
    return c


def outputs(good_in: set) -> list:
    """One setting's scores: a clean hit at the window's start in the categories
    ``good_in``, elsewhere a false alarm before the window and a late, weak hit."""
    out = []
    for cat in CATS:
        for _ in range(2):
            s = np.zeros(N)
            if cat in good_in:
                s[W0] = 1.0
            else:
                s[60] = 0.9
                s[W1] = 0.5
            out.append(s)
    return out


def test_loco_picks_the_setting_best_without_the_held_out_category():
    scorer = nab_loco.Scorer(nab_score, corpus())
    scores = [outputs({"catA", "catB"}), outputs({"catB", "catC"}), outputs({"catA", "catC"})]
    r = nab_loco.loco(scorer, scores, "standard")
    # each category's pick is the setting good on the two others, so bad on it
    assert {c: r["picks"][c]["setting"] for c in CATS} == {"catA": 1, "catB": 2, "catC": 0}
    in_sample = max(x["score"] for x in r["full"])
    assert r["total"]["score"] < in_sample - 10      # the gap that overfitting shows
    assert r["pick_of_file"] == [1, 1, 2, 2, 0, 0]


def test_a_setting_good_everywhere_is_picked_everywhere():
    scorer = nab_loco.Scorer(nab_score, corpus())
    scores = [outputs({"catA"}), outputs(set(CATS)), outputs({"catB", "catC"})]
    for profile in nab_loco.PROFILES:
        r = nab_loco.loco(scorer, scores, profile)
        assert all(pk["setting"] == 1 for pk in r["picks"].values())
        assert r["best"] == 1
        assert r["total"]["score"] == pytest.approx(r["full"][1]["score"])
        assert r["total"]["score"] == pytest.approx(100.0)
        assert r["strict"] == pytest.approx(100.0)


def test_grid_settings_and_names():
    s = nab_loco.grid_settings({"window": [1000, 2000], "bins": [48]})
    assert s == [{"bins": 48, "window": 1000}, {"bins": 48, "window": 2000}]
    names = {nab_loco.run_name(kw) for kw in s}
    assert len(names) == 2 and not any("_" in n for n in names)


def test_with_one_setting_loco_is_the_in_sample_score():
    """Nothing to choose (``--grid '{}'``): every fold keeps the one detector, so LOCO is
    its own score, whatever the per-category results."""
    scorer = nab_loco.Scorer(nab_score, corpus())
    only = outputs({"catA"})
    for profile in nab_loco.PROFILES:
        r = nab_loco.loco(scorer, [only], profile)
        assert all(pk["setting"] == 0 for pk in r["picks"].values())
        assert r["total"]["score"] == pytest.approx(r["full"][0]["score"])
        assert 0.0 < r["total"]["score"] < 100.0


def test_scale_lists_match_the_detector_defaults():
    from detectors.univariate import UnivariateDetector

    d = UnivariateDetector()
    assert nab_loco.canonical([48, 96]) == nab_loco.canonical(d.bins)
    assert nab_loco.canonical([32, 64]) == nab_loco.canonical(d.drift_span)
    assert nab_loco.canonical(64) == nab_loco.canonical([64]) == nab_loco.canonical(64.0)
    assert nab_loco.canonical([64, 256]) != nab_loco.canonical([32, 64])
    assert nab_loco.setting_label({"bins": [48, 96], "drift_span": 64.0}) == "bins=48/96 drift_span=64"
    # the default grid holds the default detector, so it is not scored twice
    defaults = {k: nab_loco.canonical(getattr(d, k)) for k in nab_loco.DEFAULT_GRID}
    assert sum({k: nab_loco.canonical(v) for k, v in kw.items()} == defaults
               for kw in nab_loco.grid_settings(nab_loco.DEFAULT_GRID)) == 1
