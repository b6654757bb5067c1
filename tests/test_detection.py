"""Behaviour of the per-key detector set on window features (issue: detection quality)."""

import math
import pickle
import random

from detectors.windowed import KeyDetectors, WindowFeatures

T0 = 1767571200.0


def window(i, count=100.0, lat=1000.0, ttft=300.0, out_tok=200.0, in_tok=800.0, cost=0.002, errors=1, rng=None):
    rng = rng or random.Random(i)
    n = max(0, int(rng.gauss(count, math.sqrt(count))))
    jitter = lambda: math.exp(rng.gauss(0, 0.06))  # noqa: E731
    return WindowFeatures(T0 + 60 * i, T0 + 60 * (i + 1), n, min(n, errors), lat * 0.5 * jitter(), lat * jitter(),
                          ttft * jitter(), in_tok * jitter(), out_tok * jitter(), cost * jitter(), cost * n,
                          int((in_tok + out_tok) * n))


def run(windows, **kw):
    det = KeyDetectors(**kw)
    out = []
    for f in windows:
        out.extend(det.update(f))
    return out


def firing(findings, typ=None):
    return [f for f in findings if f.status == "firing" and (typ is None or f.type == typ)]


def test_quiet_key_raises_nothing():
    assert firing(run([window(i) for i in range(600)])) == []


def test_one_bad_window_is_not_an_incident():
    ws = [window(i) for i in range(200)]
    ws[150].lat_p95 *= 6
    assert firing(run(ws)) == []


def test_three_minute_spike_alerts_once_and_resolves():
    ws = [window(i) for i in range(200)]
    for i in (150, 151, 152):
        ws[i].lat_p95 *= 4
    fs = run(ws)
    lat = [f for f in fs if f.type == "latency"]
    assert [f.status for f in lat][0] == "firing" and lat[-1].status == "resolved"
    assert len(firing(fs)) == 1
    assert lat[0].event_time == T0 + 60 * 150
    assert lat[0].window_end <= T0 + 60 * 152  # detected within 2 windows


def test_diurnal_swing_is_not_an_incident():
    def w(i):
        f = window(i, count=100 * (1 + 0.4 * math.sin(2 * math.pi * i / 1440)))
        return f
    assert firing(run([w(i) for i in range(3 * 1440)])) == []


def _lunch_days(days, drops=()):
    """Sixty requests a minute, three times that from 12:00 to 13:00 UTC every day (a
    five-minute ramp either side); ``drops``: (first minute, last minute) at a tenth."""
    out = []
    for i in range(days * 1440):
        m = i % 1440
        k = min(1.0, (m - 720 + 1) / 5, (780 - m) / 5) if 720 <= m < 780 else 0.0
        count = 60.0 * (1 + 2 * k)
        if any(a <= i <= b for a, b in drops):
            count *= 0.1
        out.append(window(i, count=count))
    return out


def _traffic_by_day(ws):
    per_day = {}
    for f in firing(run(ws), "traffic"):
        d = int((f.event_time - T0) // 86400)
        per_day.setdefault(d, []).append(f)
    return per_day


def test_a_sharp_daily_peak_is_the_days_pattern_after_its_first_two_days():
    # The hourly profile smooths a one-hour peak away, and it never learns one that was
    # alerted; the same time on two of the three days before says it is the day's pattern.
    per_day = _traffic_by_day(_lunch_days(5))
    assert set(per_day) <= {0, 1}, {d: [(f.direction, f.observed) for f in fs] for d, fs in per_day.items()}


def test_a_drop_still_pages_on_a_day_with_a_daily_peak():
    # At a quiet hour, and in the middle of the peak (where yesterday had three times as much);
    # the day after the drop in the peak, the peak is still the day's pattern (as the day before).
    day = 1440
    per_day = _traffic_by_day(_lunch_days(5, drops=[(2 * day + 960, 2 * day + 974), (3 * day + 740, 3 * day + 754)]))
    assert [(f.direction, int((f.event_time - T0) % 86400 // 60)) for f in per_day[2]] == [("down", 960)]
    assert [(f.direction, int((f.event_time - T0) % 86400 // 60)) for f in per_day[3]] == [("down", 740)]
    assert 4 not in per_day


def test_a_drop_in_a_daily_wave_does_not_make_the_next_days_wave_page():
    # A 30-minute wave (x4 at 09:00) and, on the third day, a drop in the middle of it: the
    # fourth and fifth days still find the wave on two of the three days before. The drop is
    # judged against the key's level, not against the wave of the days before: to a twentieth of
    # the wave, it is a fifth of the level (a tenth of the wave, 0.4 of the level, is at the bar
    # of FALL_FACTOR and does not always page).
    out = []
    for i in range(5 * 1440):
        m = i % 1440
        k = min(1.0, (m - 540 + 1) / 3, (570 - m) / 3) if 540 <= m < 570 else 0.0
        count = 60.0 * (1 + 3 * k) * (0.05 if 2 * 1440 + 548 <= i <= 2 * 1440 + 562 else 1.0)
        out.append(window(i, count=count))
    per_day = _traffic_by_day(out)
    assert {d: [(f.direction, int((f.event_time - T0) % 86400 // 60)) for f in fs] for d, fs in per_day.items()} == {
        0: [("up", 541)], 1: [("up", 540)], 2: [("down", 548)]}



def test_a_quiet_weekend_pages_on_the_first_two_weekends_only():
    # A daily swing, and weekends at a third of a weekday (T0 is a Monday); on the third
    # Saturday, a real drop at 14:00.
    drop = (19 * 1440 + 840, 19 * 1440 + 854)
    ws = []
    for i in range(21 * 1440):
        d, m = divmod(i, 1440)
        count = 60.0 * (1 + 0.5 * math.sin(2 * math.pi * (m - 360) / 1440)) * (0.35 if d % 7 in (5, 6) else 1.0)
        if drop[0] <= i <= drop[1]:
            count *= 0.1
        ws.append(window(i, count=count))
    per_day = _traffic_by_day(ws)
    # The first two weekends may page (nothing says yet that it is one); after them, only the drop.
    assert set(per_day) - set(range(15)) == {19}, {d: [(f.direction, f.observed) for f in fs] for d, fs in per_day.items()}
    assert [(f.direction, int((f.event_time - T0) % 86400 // 60)) for f in per_day[19]] == [("down", 840)]


def test_a_nightly_batch_with_other_requests_pages_on_its_first_two_nights_only():
    # From 02:00 to 04:00 every night a batch job's requests make answers twice as long and
    # latency three times as long; on the fourth night latency goes to x9 (a real incident).
    for attr, usual, factor in (("out_tok", 200.0, 2.0), ("lat", 1000.0, 3.0)):
        ws = []
        for i in range(5 * 1440):
            m = i % 1440
            x = usual * (factor if 120 <= m < 240 else 1.0)
            if attr == "lat" and 3 * 1440 + 180 <= i < 3 * 1440 + 195:
                x *= 3.0
            ws.append(window(i, **{attr: x}))
        fs = firing(run(ws))
        when = [(int((f.event_time - T0) // 86400), int((f.event_time - T0) % 86400 // 60), f.type) for f in fs]
        if attr == "out_tok":
            assert when == [(0, 120, "tokens"), (1, 120, "tokens")]  # nor a drift
        else:
            assert when == [(0, 120, "latency"), (1, 120, "latency"), (3, 180, "latency")]

def test_traffic_drop_alerts():
    ws = [window(i) for i in range(300)]
    for i in range(200, 215):
        ws[i] = window(i, count=8)
    fs = firing(run(ws), "traffic")
    assert len(fs) == 1 and fs[0].direction == "down"


def test_slow_drift_alerts_as_drift_with_size_and_start():
    ws = []
    for i in range(400):
        growth = 1.0 if i < 200 else min(1.5, 1 + 0.5 * (i - 200) / 60)
        ws.append(window(i, out_tok=200 * growth))
    fs = run(ws)
    drift = firing(fs, "drift")
    assert len(drift) == 1, fs
    d = drift[0]
    assert d.metric == "output_tokens_mean"
    assert T0 + 60 * 190 <= d.evidence["change_start"] <= T0 + 60 * 260
    # The alert's event time is the window that made it a drift, never before the ramp began.
    assert T0 + 60 * 200 <= d.event_time == d.window_end - 60 <= T0 + 60 * 300
    assert d.evidence["change"] > 0.1
    assert firing(fs, "tokens") == []  # a slow drift is not a spike


def test_quicker_drift_on_a_quiet_series_is_still_a_drift():
    # x1.5 over 30 minutes: the CUSUM crosses its threshold before the 15 windows
    # a drift must last, with no spike alerted; it is held, not taken as a new level.
    for seed in range(5):
        ws = [window(i + 1000 * seed, out_tok=200 * (1.0 if i < 200 else 1 + 0.5 * min(1.0, (i - 200) / 30)))
              for i in range(400)]
        drift = firing(run(ws), "drift")
        assert len(drift) == 1, seed
        assert drift[0].evidence["windows_accumulated"] >= 15


def _lasting_drift(seed, noise, n=1200):
    # Input tokens (and so cost) per request ramp up 50% over an hour and stay
    # there for 16 hours; `noise` is the window-to-window spread of their means
    # (0.06 for the other metrics, up to 0.2 on keys with long, varied prompts).
    rng = random.Random(seed)
    out = []
    for i in range(n):
        g = 1.0 if i < 200 else min(1.5, 1 + 0.5 * (i - 200) / 60)
        c = max(1, int(rng.gauss(100, 10)))
        j = lambda s=0.06: math.exp(rng.gauss(0, s))  # noqa: E731
        out.append(WindowFeatures(T0 + 60 * i, T0 + 60 * (i + 1), c, 1, 500 * j(), 1000 * j(), 300 * j(),
                                  800 * g * j(noise), 200 * j(), 0.002 * g * j(noise), 0.002 * c, 1000 * c))
    return out


def test_a_drift_that_stays_is_one_alert_for_the_rest_of_the_day():
    # The alarm is accepted while the ramp still climbs; the rest of the ramp,
    # and a reference taken from one noisy window, used to add up to a second
    # "drift" of the same change hours later.
    for noise in (0.1, 0.2):
        for seed in range(4):
            fs = [f for f in run(_lasting_drift(seed, noise)) if f.type == "drift"]
            assert [f.status for f in fs] == ["firing", "resolved"], (noise, seed, [(f.status, f.metric) for f in fs])
            opened, closed = fs
            assert T0 + 60 * 200 <= opened.event_time <= T0 + 60 * 260
            # The resolved message carries the numbers of the metric it names.
            assert closed.metric == opened.metric
            assert 0.5 < closed.observed / opened.observed < 2.0, (closed.observed, opened.observed)


def _ramp(seed, top, n=600):
    # Output tokens ramp to x`top` over an hour from window 200 and stay; 5% window noise.
    rng = random.Random(seed)
    return [window(i, out_tok=200 * (1 + (top - 1) * min(1.0, max(0, i - 200) / 60)) * math.exp(rng.gauss(0, 0.05)))
            for i in range(n)]


def test_a_lasting_change_under_drift_min_change_does_not_page():
    # A 20% lasting rise is the wander of a busy service; 40% is a drift. The
    # bar is the detection key drift_min_change (0.25 by default).
    for seed in range(3):
        assert firing(run(_ramp(seed, 1.2)), "drift") == [], seed
        assert len(firing(run(_ramp(seed, 1.4)), "drift")) == 1, seed
    low = KeyDetectors(drift_min_change=0.1)
    small = [f for w in _ramp(0, 1.2) for f in low.update(w) if f.type == "drift" and f.status == "firing"]
    assert len(small) == 1


def test_the_time_a_small_change_has_to_grow_counts_from_its_own_start():
    # A change under drift_min_change is held for drift_quiet windows, then taken as the level.
    # Held windows left over from earlier small changes (110 of the 120 here, as a busy service's
    # wanders leave them) must not cut a later drift's time short: taken as the level halfway up,
    # a ramp to x1.45 went out as two changes under 30%, and never paged.
    for seed in range(3):
        rng = random.Random(seed)
        det = KeyDetectors()
        fs = []
        for i in range(700):
            if i == 300:
                det._drifts._held = {m: 110 for m in det._drifts.metrics}
            level = 1 + 0.45 * min(1.0, max(0, i - 400) / 90)
            fs.extend(det.update(window(i, out_tok=200 * level * math.exp(rng.gauss(0, 0.05)))))
        drift = firing(fs, "drift")
        assert len(drift) == 1 and T0 + 60 * 400 <= drift[0].window_end <= T0 + 60 * 520, (seed, drift)


def test_a_level_that_comes_and_goes_is_not_a_drift_once_the_key_knows_it():
    # Input tokens (and cost) swing +-20-30% over a three-hour cycle (a real trace's mix comes and
    # goes); output tokens do not. Judged against a fixed 25% bar, each swing paged a drift (8 a
    # day); the bar for a metric rises with how far its fast level wanders from its slow one, which
    # takes the key's first hours to learn (one or two early swings may page), and output tokens
    # still page a x1.5 drift at the usual bar.
    def run_day(seed, amp, out_drift=False):
        rng = random.Random(seed)
        ws = []
        for i in range(1440):
            swing = math.exp(amp * math.sin(2 * math.pi * i / 170.0))
            out = 1 + 0.5 * min(1.0, max(0, i - 900) / 60) if out_drift else 1.0
            ws.append(window(i, in_tok=800 * swing * math.exp(rng.gauss(0, 0.05)),
                             out_tok=200 * out * math.exp(rng.gauss(0, 0.05)), cost=0.002 * swing))
        return firing(run(ws), "drift")

    for amp in (0.2, 0.25, 0.3):
        for seed in range(3):
            drift = run_day(seed, amp)
            assert len(drift) <= 2, (amp, seed, drift)
            assert all(d.window_end <= T0 + 8 * 3600 for d in drift), (amp, seed, drift)
    for seed in range(3):
        drift = [d for d in run_day(seed, 0.25, out_drift=True) if d.window_end > T0 + 4 * 3600]
        assert [d.metric for d in drift] == ["output_tokens_mean"], (seed, drift)


def test_cost_moved_by_an_alerted_token_spike_is_not_a_drift():
    # Output tokens x3 for 40 minutes drag the cost per request up 30% (under the
    # cost spike threshold): the tokens incident explains it, no drift of cost.
    for seed in range(5):
        ws = [window(i + 1000 * seed, out_tok=200 * (3 if 300 <= i < 340 else 1),
                     cost=0.002 * (1.3 if 300 <= i < 340 else 1)) for i in range(450)]
        fs = run(ws)
        assert len(firing(fs, "tokens")) == 1 and firing(fs, "drift") == [], seed


def test_a_shift_held_near_the_alert_level_does_not_widen_the_scale_and_hide():
    # Output tokens x1.8 for 15 minutes on a key whose window means vary by
    # about 12%: z of 4-5, just around the alert level. Each window learned at
    # the clip used to widen the scale by about 14%, so the shift hid itself
    # within a few windows (9 of 20 found); far-off windows now move the scale slowly.
    found = 0
    for seed in range(20):
        rng = random.Random(seed)
        ws = []
        for i in range(300):
            j = lambda s=0.06: math.exp(rng.gauss(0, s))  # noqa: E731
            c = max(1, int(rng.gauss(30, 5)))
            g = 1.8 if 200 <= i < 215 else 1.0
            ws.append(WindowFeatures(T0 + 60 * i, T0 + 60 * (i + 1), c, 0, 500 * j(), 1000 * j(), 300 * j(),
                                     800 * j(), 300 * g * j(0.12), 0.002 * j(), 0.002 * c, 1000 * c))
        fire = firing(run(ws))
        assert all(T0 + 60 * 200 <= f.event_time < T0 + 60 * 216 for f in fire), [(f.type, f.event_time) for f in fire]
        found += any(f.type == "tokens" for f in fire)
    assert found >= 16, found


def test_cold_start_has_no_false_alarms_in_its_first_hour():
    fs = []
    for seed in range(20):  # twenty new keys, each watched for its first hour
        fs += run([window(i, rng=random.Random(seed * 1000 + i)) for i in range(60)])
    assert firing(fs) == []


def test_level_shift_alerts_once_not_a_storm():
    ws = [window(i) for i in range(200)] + [window(i, lat=2500.0) for i in range(200, 600)]
    fs = firing(run(ws), "latency")
    assert len(fs) == 1


def test_state_pickles_mid_stream():
    det = KeyDetectors()
    ws = [window(i) for i in range(300)]
    for f in ws[:150]:
        det.update(f)
    clone = pickle.loads(pickle.dumps(det))
    for i in (200, 201, 202):
        ws[i].lat_p95 *= 5
    a = [(f.type, f.status) for w in ws[150:] for f in det.update(w)]
    b = [(f.type, f.status) for w in ws[150:] for f in clone.update(w)]
    assert a == b and a


def _parents_with_history():
    from detectors.priors import ParentPriors

    priors = ParentPriors()
    parents = (("service", "svc"), ("fleet",))
    for k in range(3):  # three sibling models, warm, reporting their noise levels
        det = KeyDetectors()
        for i in range(200):
            det.update(window(i, rng=random.Random(k * 7919 + i)), priors, parents, f"sibling{k}")
    return priors, parents


def test_new_key_borrows_its_parents_noise_level_and_can_alert_early():
    priors, parents = _parents_with_history()
    ws = [window(i, lat=3000.0, rng=random.Random(50_000 + i)) for i in range(40)]  # a new, slower model
    for i in (15, 16, 17):
        ws[i].lat_p95 *= 8
        ws[i].lat_p50 *= 8
    det = KeyDetectors()
    fs = [f for w in ws for f in det.update(w, priors, parents, "new")]
    assert [f.type for f in fs if f.status == "firing"] == ["latency"]
    # Without parents it is still warming up at window 17: nothing.
    alone = KeyDetectors()
    assert [f for w in ws for f in alone.update(w) if f.status == "firing"] == []


def test_new_key_with_borrowed_scale_stays_quiet_in_its_first_hour():
    priors, parents = _parents_with_history()
    fs = []
    for k in range(20):
        det = KeyDetectors()
        for i in range(60):
            fs += det.update(window(i, lat=500.0 * (1 + k), rng=random.Random(k * 1000 + i + 7)), priors, parents,
                             f"new{k}")
    assert firing(fs) == []


def test_new_batch_keys_first_batch_ending_is_not_a_traffic_drop():
    # A new key whose first ten windows are one scheduled batch: the parents lend it their
    # noise levels, not its traffic level; the batch's end is no traffic drop.
    priors, parents = _parents_with_history()
    fs = []
    for k in range(5):
        det = KeyDetectors()
        for i in range(60):
            in_batch = (i + 3 * k) % 20 < 10
            w = window(i, count=180 if in_batch else 1, rng=random.Random(k * 1000 + i))
            fs += det.update(w, priors, parents, f"batch{k}")
    assert firing(fs, "traffic") == []


def _error_windows(seed, n_windows, count, rate_at):
    rng = random.Random(seed)
    ws = []
    for i in range(n_windows):
        f = window(i, count=count, rng=rng)
        p = rate_at(i)
        f.errors = sum(1 for _ in range(f.count) if rng.random() < p)
        ws.append(f)
    return ws


def test_error_rate_rise_on_a_quiet_key_adds_up_over_windows():
    # 40 requests a minute, errors 1.1% -> 8% for ten minutes: about three errors
    # a window, rarely significant in one window, clear over several (the
    # one-window test alone finds about a third of these).
    found = 0
    for seed in range(10):
        ws = _error_windows(seed, 400, 40, lambda i: 0.08 if 300 <= i < 310 else 0.011)
        fs = run(ws, types=("error_rate",))
        fired = firing(fs, "error_rate")
        assert all(300 * 60 <= f.window_end - T0 <= 313 * 60 for f in fired), seed
        assert len(fired) <= 1 and (not fired or fs[-1].status == "resolved"), seed
        found += len(fired)
    assert found >= 8


def test_error_rate_noise_on_quiet_keys_stays_quiet():
    for seed in range(6):
        ws = _error_windows(seed, 1440, 40, lambda i: 0.011)
        assert firing(run(ws, types=("error_rate",)), "error_rate") == [], seed


def test_error_rate_rise_is_judged_against_the_rate_from_before_it(monkeypatch):
    # 30 requests a minute, errors 0.65% -> 5.5% for ten minutes: one or two
    # errors a window. The usual rate lags ERR_GUARD windows, so the rise adds
    # up against the rate from before it began instead of being learned as it
    # goes (which, without the lag, hides about two thirds of these).
    import detectors.key_metrics as key_metrics

    def found_and_false():
        found = false = 0
        for seed in range(20):
            ws = _error_windows(seed, 400, 30, lambda i: 0.055 if 300 <= i < 310 else 0.0065)
            fired = firing(run(ws, types=("error_rate",)), "error_rate")
            found += any(300 * 60 <= f.window_end - T0 <= 313 * 60 for f in fired)
            false += sum(not (300 * 60 <= f.window_end - T0 <= 313 * 60) for f in fired)
        return found, false

    found, false = found_and_false()
    assert found >= 12 and false == 0, (found, false)
    monkeypatch.setattr(key_metrics, "ERR_GUARD", 0)
    without, _ = found_and_false()
    assert without <= found - 4, (without, found)
