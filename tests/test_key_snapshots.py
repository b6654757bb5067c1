"""KeyDetectors states pickled mid-run on tests/key_windows.py's day by the code of commit 2037dc9,
of the layout before the per-type detectors (tests/data/key_detectors_flat.pickle, with the findings
of that code's uninterrupted run), load into the per-type detectors and continue with the findings
of an uninterrupted run, which are those that code found (the input-token drift a window apart: its
CUSUM now counts what consecutive windows share).

The fixture: ``KeyDetectors()`` of that commit run over ``key_windows()``, pickled (protocol 4)
before windows 315 (an output-token spike open), 510 (an error storm open) and 1000 (an input-token
drift building up), and every finding of the run recorded as :func:`_row` records it."""

import pickle
from pathlib import Path

import pytest

from detectors.key_metrics import DriftWatch, ErrorRateDetector, PooledDetector, QuantileDetector, TrafficDetector
from detectors.windowed import KeyDetectors
from tests.key_windows import key_windows

FIXTURE = Path(__file__).parent / "data" / "key_detectors_flat.pickle"


def _row(i, fd):
    return (i, fd.status, fd.type, fd.metric, fd.observed, fd.expected, fd.score, fd.severity, fd.event_time,
            fd.evidence, fd.hints)


def _run(det, ws, start=0):
    return [_row(i, fd) for i, f in enumerate(ws[start:], start) for fd in det.update(f)]


@pytest.fixture(scope="module")
def fixture():
    with FIXTURE.open("rb") as fh:
        return pickle.load(fh)


@pytest.fixture(scope="module")
def windows():
    return key_windows()


def _without_span(det):
    """The detectors as that code had them: traffic judged window by window only."""
    det.span_windows = det._traffic.span_windows = 0
    return det


@pytest.fixture(scope="module")
def current(windows):
    """The findings of this code's uninterrupted run, traffic judged window by window as that code did."""
    return _run(KeyDetectors(span_windows=0), windows)


def _drift(rows):
    return [r for r in rows if r[2] == "drift"]


def test_uninterrupted_run_finds_what_the_earlier_layout_found(fixture, current):
    # Every finding is that code's but the input-token drift's: its CUSUM now counts what consecutive
    # windows share (PooledLogMean.long_run), and the drift reaches its bar a window apart.
    assert [r for r in current if r[2] != "drift"] == [r for r in fixture["findings"] if r[2] != "drift"]
    now, then = _drift(current), _drift(fixture["findings"])
    assert [(r[1], r[3]) for r in now] == [(r[1], r[3]) for r in then]
    assert all(abs(a[0] - b[0]) <= 2 for a, b in zip(now, then)), (now, then)
    assert {r[2] for r in current} >= {"latency", "ttft", "tokens", "cost", "error_rate", "traffic", "drift"}


def test_the_span_changes_only_traffic(current, windows):
    """Judging traffic on a quarter hour's sum too holds the burst's traffic episode while the
    sum stays high; every other finding is the same."""
    found = _run(KeyDetectors(), windows)
    other = [r for r in found if r[2] != "traffic"]
    assert other == [r for r in current if r[2] != "traffic"]
    traffic = [r for r in found if r[2] == "traffic"]
    assert [r[1] for r in traffic] == ["firing", "resolved"] and 1100 <= traffic[0][0] <= 1102


@pytest.mark.parametrize("at", [315, 510, 1000])
def test_flat_snapshot_restores_into_the_parts_and_continues_identically(fixture, current, windows, at):
    raw = fixture["states"][at]
    assert b"_err_sums" in raw and b"_traffic" not in raw  # the earlier layout
    det = _without_span(pickle.loads(raw))
    assert isinstance(det._traffic, TrafficDetector) and isinstance(det._pooled, PooledDetector)
    assert isinstance(det._quantiles, QuantileDetector) and isinstance(det._errors, ErrorRateDetector)
    assert isinstance(det._drifts, DriftWatch)
    assert not {"_err_sums", "_drift", "_season", "_hourly", "_bursts", "_memory"} & set(vars(det))
    expected = [r for r in current if r[0] >= at]
    assert expected  # something happens after the snapshot
    found = _run(det, windows, at)
    # That layout kept no covariances of the windows: they are learned anew from the snapshot on, so the
    # drift's numbers (which count them) differ a little from the uninterrupted run's; it pages as it does.
    assert [r for r in found if r[2] != "drift"] == [r for r in expected if r[2] != "drift"]
    assert [(r[1], r[3]) for r in _drift(found)] == [(r[1], r[3]) for r in _drift(expected)]
    assert all(abs(a[0] - b[0]) <= 2 for a, b in zip(_drift(found), _drift(expected)))
    again = pickle.loads(pickle.dumps(_without_span(pickle.loads(raw))))  # restored, snapshotted anew, restored
    assert b"_traffic" in pickle.dumps(again)
    assert _run(again, windows, at) == found
