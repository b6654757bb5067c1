"""Event-time windows of one key: per-partition progress, idle partitions, gap filling."""

from operators.windowing import KeyWindows

T0 = 1767571200.0


class Agg:
    def __init__(self, start):
        self.start = start
        self.n = 0


def make(**kw):
    args = dict(size=60.0, lateness=5.0, idle_partition=10.0, max_open=1000, new_agg=Agg)
    args.update(kw)
    return KeyWindows(**args)


def feed(w, part, ts, now, partitions=2):
    agg = w.agg_for(part, ts, now, partitions)
    if agg is not None:
        agg.n += 1
    return agg


def test_slowest_active_partition_holds_the_watermark():
    w = make()
    now = 100.0
    # Partition A is three hours ahead of B in event time; both are being read.
    for i in range(300):
        now += 0.01
        assert feed(w, "A", T0 + 3 * 3600 + i, now) is not None
        assert feed(w, "B", T0 + i, now) is not None
    now += 20.0  # past the startup grace
    feed(w, "A", T0 + 3 * 3600 + 300, now)
    feed(w, "B", T0 + 300, now)
    closed = w.close_ready(now)
    # Only B's complete windows (<= T0+300-5) are closed: A's wait for B.
    assert [s for s, _ in closed] == [T0 + 60 * i for i in range(4)]
    assert all(a.n == 60 for _, a in closed)
    # B goes on and is never late.
    for i in range(301, 600):
        assert feed(w, "B", T0 + i, now + 1) is not None


def test_quiet_partition_does_not_stall_the_key():
    w = make()
    feed(w, "A", T0, 0.0)
    feed(w, "B", T0 + 5, 0.0)
    for i in range(1, 600):
        feed(w, "A", T0 + i, 30.0 + i * 0.01)  # B sends nothing for this key any more
    assert w.close_ready(40.0) == []  # silent: B may be delayed, so it holds the key
    w.quiet("B")  # B's source has read all there is
    closed = w.close_ready(40.0)
    assert len(closed) >= 8  # A's windows close although B stopped at T0+5
    assert feed(w, "B", T0 + 590, 41.0) is not None  # B speaks again, in an open window: it holds again
    assert w.close_ready(41.0) == []


def test_delayed_partition_makes_no_event_late():
    """Two processes: one reads A hours ahead while B's events wait (its reader is busy) for longer
    than idle_partition. None of B's events is late, and the key's windows close once B catches up."""
    w = make(max_open=5000)  # (with fewer, the oldest would close to bound memory)
    now = 0.0
    for i in range(120):
        now += 0.01
        feed(w, "A", T0 + 30 * i, now)  # A: an hour in 1.2 s
        feed(w, "B", T0 + i, now)
    for i in range(120, 2880):
        now += 0.01
        feed(w, "A", T0 + 30 * i, now)  # A reaches T0+24h; B's events are delayed
    b_wall = 1.2
    now += 40.0  # 40 s of wall time without a word from B
    closed = w.close_ready(now)
    # Only as far as B could have moved at the pace of wall time since it spoke, not to A's 24 h.
    assert closed and all(s + 60 <= T0 + 119 + (now - b_wall - 10.0) - 5.0 for s, _ in closed)
    late = 0
    n_closed = len(closed)
    for i in range(120, 7200):
        now += 0.001
        late += feed(w, "B", T0 + i, now) is None
        if i % 200 == 0:
            n_closed += len(w.close_ready(now))
    n_closed += len(w.close_ready(now))
    assert late == 0
    assert n_closed == 119  # B caught up to T0+2h: the windows before it closed, in order


def test_silent_partition_moves_on_with_wall_time():
    """Live (event time keeps pace with wall time): a partition with nothing more for this key holds
    its windows idle_partition longer, no more."""
    w = make()
    feed(w, "A", T0, 0.0)
    feed(w, "B", T0 + 5, 5.0)  # B's last event for this key
    first = {}
    for i in range(6, 200):
        feed(w, "A", T0 + i, float(i))
        for s, _ in w.close_ready(float(i)):
            first[s] = i
    # Each window closes idle_partition (10 s) + lateness (5 s) after its end, in wall seconds.
    assert first == {T0: 75, T0 + 60: 135, T0 + 120: 195}


def test_key_quiet_advances_with_wall_time():
    w = make()
    for i in range(90):
        feed(w, "A", T0 + i, 0.0)
    assert [s for s, _ in w.close_ready(11.0)] == [T0]  # [T0+60, T0+120) still open
    assert [s for s, _ in w.close_ready(11.0 + 10 + 60)] == [T0 + 60]


def test_missing_windows_come_out_empty_between_closed_ones():
    w = make(idle_partition=0.0)
    feed(w, "A", T0 + 1, 0.0)
    feed(w, "A", T0 + 181, 0.0)
    feed(w, "A", T0 + 400, 0.0)
    closed = w.close_ready(0.0)
    assert [(s - T0, a is None) for s, a in closed] == [(0, False), (60, True), (120, True), (180, False)]


def test_events_behind_a_closed_window_are_reported_late():
    w = make(idle_partition=0.0)
    feed(w, "A", T0 + 1, 0.0)
    feed(w, "A", T0 + 200, 0.0)
    w.close_ready(0.0)
    assert w.agg_for("A", T0 + 2, 0.0) is None


def test_open_windows_are_bounded():
    w = make(max_open=5)
    for i in range(20):
        feed(w, "A", T0 + 60 * i, 0.0)
    w.close_ready(0.0)  # inside the startup grace: only the overflow closes
    assert w.open_count <= 5
