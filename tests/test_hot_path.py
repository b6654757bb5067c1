"""The batch path (records decoded in C, a key's requests as columns, folded a window at a time) against the
event-at-a-time path it replaced, on the replay benchmark's kind of input: the same alerts."""

from __future__ import annotations

import os
import pickle
import sys

import orjson
import pytest

from bytewax.testing import TestingSource

import operators.actors as actors_mod
import operators.parse as parse_mod
from operators.model_windows import WindowAgg
from operators.windowing import frozen
from sentinel.events import ActorRequests, LLMEvent, RawBatch, RawRecords, Requests
from sources import file as file_source
from tests.helpers import run_flow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import world  # noqa: E402

# The first events of a scenario family's world, as benchmarks/kafka_throughput.py --population families reads
# them: thousands of users on several services, errors, security events; five hours, with incidents.
N_EVENTS = 110_000


@pytest.fixture(scope="module")
def replay_lines():
    lines = []
    for ev in world.World("enterprise-mix", seed=7, hours=24.0).events():
        lines.append(orjson.dumps(ev))
        if len(lines) >= N_EVENTS:
            break
    return lines


@pytest.fixture(scope="module")
def batch_run(replay_lines):
    return run_flow(_batches(replay_lines))


def _batches(lines, size=2000, parts=2):
    """Round-robin over ``parts`` partitions, as a keyless producer spreads a topic, in source-sized batches."""
    out = []
    for p in range(parts):
        mine = lines[p::parts]
        for i in range(0, len(mine), size):
            out.append(RawBatch(f"t[{p}]", RawRecords("t", p, mine[i:i + size], list(range(i, i + size))),
                                0.0, parts))
    # Interleave the partitions' batches as a consumer would read them.
    n = (len(out) + parts - 1) // parts
    return [b for i in range(n) for b in out[i::n]]


def _what(alerts):
    return [{k: v for k, v in a.items() if k != "detected_at"} for a in alerts]


def _per_event_fold(self, reqs, sel=None):
    """WindowAgg.add of each request, as the flow did before columns."""
    if sel is None:
        evs = list(reqs)
    elif sel.__class__ is slice:
        evs = list(reqs[sel])
    else:
        evs = [reqs[i] for i in sel]
    for ev in evs:
        self.add(ev)


def _per_event_actors(agg, reqs, sel):
    idx = range(len(reqs)) if sel is None else range(len(reqs))[sel] if sel.__class__ is slice else sel
    for i in idx:
        actors_mod.add_request(agg.actors, reqs.actor[i], min(reqs.tokens[i], actors_mod.MAX_REQUEST_TOKENS),
                               reqs.model[i])


def test_the_batch_path_gives_the_alerts_of_the_event_at_a_time_path(replay_lines, batch_run, monkeypatch):
    batch_alerts, batch_dead = batch_run
    assert len(batch_alerts) >= 6  # the comparison means something: the span has incidents
    assert batch_dead == []
    # The reference: every record the long way (orjson and explicit checks, an LLMEvent each), every
    # request folded into its window on its own.
    monkeypatch.setattr(parse_mod, "request_ts", lambda w, limits: None)
    monkeypatch.setattr(parse_mod.BatchParser, "_in_time", lambda self, batch, clock, at: None)
    monkeypatch.setattr(WindowAgg, "fold", _per_event_fold)
    monkeypatch.setattr(actors_mod, "_fold_actors", _per_event_actors)
    ref_alerts, ref_dead = run_flow(_batches(replay_lines))
    assert ref_dead == []
    assert _what(batch_alerts) == _what(ref_alerts)


def _mixed_batches(seed: int, n_batches: int = 12, size: int = 300):
    """JSON batches of one partition in time order: requests the decoder takes, requests only the long way
    takes, security events, bad records and, now and then, one far ahead of the rest."""
    import random

    rnd = random.Random(seed)
    t = 1_780_000_000.0
    out = []
    for b in range(n_batches):
        values = []
        for _ in range(size):
            t += rnd.random()
            r = rnd.random()
            rec = {"timestamp": t, "service": rnd.choice(["a", "b", "c"]), "model": rnd.choice(["m1", "m2"]),
                   "latency_ms": rnd.uniform(10, 900), "input_tokens": rnd.randint(1, 900),
                   "user_id": f"u{rnd.randint(1, 40)}", "event_id": f"e{len(out)}-{len(values)}"}
            if r < 0.05:
                rec = {"timestamp": t, "event_type": "security", "source": "waf", "kind": "prompt_injection"}
            elif r < 0.08:
                rec["input_tokens"] = 12.0  # an integer written as a float: the long way takes it
            elif r < 0.10:
                rec["timestamp"] = "2026-05-01T10:00:00"  # no offset: a dead letter
            elif r < 0.12:
                rec["latency_ms"] = -1  # out of range
            elif r < 0.13:
                rec["status"] = "error"
                rec["error_type"] = "x" * 400  # cut to the name length
            elif r < 0.14 and b % 3 == 2:
                rec["timestamp"] = t + 7200.0  # far ahead: held, then a dead letter
            values.append(orjson.dumps(rec) if r < 0.995 else b"{not json")
        out.append(RawBatch("p", RawRecords("t", 0, values, list(range(len(values)))), 100.0 + b, 1))
    return out


def _tagged(items):
    """Tagged groups with their dead letters as plain tuples (DeadLetter has no equality)."""
    return [(tag, key, [(d.reason, d.detail, d.position, d.raw) for d in val] if tag == parse_mod.DEAD else val)
            for tag, key, val in items]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_batches_in_time_parse_as_the_event_at_a_time_loop_parses_them(seed, monkeypatch):
    in_time = parse_mod.BatchParser._in_time
    taken = []

    def counted(self, batch, clock, at):
        out = in_time(self, batch, clock, at)
        taken.append(out is not None)
        return out

    monkeypatch.setattr(parse_mod.BatchParser, "_in_time", counted)
    fast = parse_mod.BatchParser()
    got = [_tagged(fast(b)) for b in _mixed_batches(seed)]
    monkeypatch.setattr(parse_mod.BatchParser, "_in_time", lambda self, batch, clock, at: None)
    slow = parse_mod.BatchParser()
    want = [_tagged(slow(b)) for b in _mixed_batches(seed)]
    assert got == want
    # Most batches went the way in time; the first, and those with an event far ahead, the general loop.
    assert 6 <= sum(taken) < len(taken)
    assert any(tag == parse_mod.DEAD for batch in got for tag, _, _ in batch)
    assert fast.clocks["p"].wm == slow.clocks["p"].wm and fast.clocks["p"].wall == slow.clocks["p"].wall


def test_batch_size_does_not_change_the_alerts(replay_lines, batch_run):
    big, _ = batch_run
    small, _ = run_flow(_batches(replay_lines, size=97))
    assert _what(big) == _what(small)


def _readline_records(path, max_line, batch_size):
    """What the file source read before it read in blocks: one readline per line."""
    out = []
    line_no = 1
    with open(path, "rb") as f:
        while True:
            line = f.readline(max_line + 1)
            if not line:
                return out
            if len(line) > max_line and not line.endswith(b"\n"):
                size = len(line)
                while True:
                    chunk = f.readline(1 << 20)
                    size += len(chunk)
                    if not chunk or chunk.endswith(b"\n"):
                        break
                out.append((line, line_no, size))
            else:
                line = line.rstrip(b"\r\n")
                if line.strip():
                    out.append((line, line_no, len(line)))
            line_no += 1


def _random_lines(seed: int) -> bytes:
    import random

    rng = random.Random(seed)
    kinds = [b"", b"   ", b"\t", b"\r", b'{"k": 1}', b'{"k": 22}\r', b"x" * 12, b"y" * 13, b"z" * 40, b" {}"]
    return b"\n".join(rng.choice(kinds) for _ in range(600)) + rng.choice([b"", b"\n", b"tail"])


@pytest.mark.parametrize("chunk", [3, 7, 64, 1 << 20])
@pytest.mark.parametrize("batch_size,body", [
    (3, b'{"a": 1}\n\n   \n{"b": 22}\r\n' + b"x" * 40 + b"\n" + b"y" * 12 + b"\n" + b"z" * 13 + b"\r\n"
     + b"\n" * 3 + b"w" * 30 + b'\n{"c": 3}\n' + b"q" * 25),  # the last line has no newline, over the limit
    (50, _random_lines(1)),
    (1000, _random_lines(2)),
])
def test_the_file_source_reads_in_blocks_what_readline_read(tmp_path, monkeypatch, chunk, batch_size, body):
    monkeypatch.setattr(file_source, "CHUNK", chunk)
    path = tmp_path / "in.jsonl"
    path.write_bytes(body)
    max_line = 12
    src = file_source.FileSource(str(path), batch_size=batch_size, max_line=max_line)
    part = src.build_part("s", str(path), None)
    got = []
    snaps = []
    while True:
        try:
            for b in part.next_batch():
                got.extend((r.data, r.position[2], r.size) for r in b.records)
        except StopIteration:
            break
        snaps.append(part.snapshot())
    assert got == _readline_records(str(path), max_line, batch_size)
    # A resume from any snapshot reads the rest, and only the rest.
    for offset, line in snaps:
        part2 = src.build_part("s", str(path), (offset, line))
        rest = []
        while True:
            try:
                for b in part2.next_batch():
                    rest.extend((r.data, r.position[2], r.size) for r in b.records)
            except StopIteration:
                break
        assert rest == [g for g in got if g[1] >= line]


def test_requests_pickle_and_iterate_as_events():
    evs = [LLMEvent(1767571200.0 + i, "svc", "m", latency_ms=100.0 + i, is_error=i == 2, error_type="x" if i == 2
                    else None, user_id=f"u{i}", input_tokens=i, output_tokens=None) for i in range(5)]
    reqs = Requests.of_events(evs)
    assert len(reqs) == 5 and list(reqs) == evs and reqs[1:3] == Requests.of_events(evs[1:3])
    assert pickle.loads(pickle.dumps(reqs)) == reqs
    assert list(reqs + reqs) == evs + evs


def test_actor_columns_are_what_each_event_says(seed=11):
    # The token-abuse step's four columns, built once per service where the batch is parsed, against
    # each event's own actor and tokens (users, tenants, neither; missing token counts).
    import random

    rng = random.Random(seed)
    evs = [LLMEvent(float(i), "svc", rng.choice(["m1", "m2"]),
                    input_tokens=rng.choice([None, 0, 5, 1200]), output_tokens=rng.choice([None, 7, 300]),
                    user_id=rng.choice([None, "", "u1", "u2"]), tenant_id=rng.choice([None, "", "t1"]))
           for i in range(400)]
    a = ActorRequests.of_requests(Requests.of_events(evs))
    assert a.actor == tuple(ev.actor for ev in evs)
    assert a.tokens == tuple((ev.input_tokens or 0) + (ev.output_tokens or 0) for ev in evs)
    assert a.model == tuple(ev.model for ev in evs) and a.ts == tuple(ev.ts for ev in evs)
    back = pickle.loads(pickle.dumps(a))
    assert back == a and back.actor == a.actor and back.tokens == a.tokens
    # Smaller in pickle than the whole columns they come from.
    assert len(pickle.dumps(a)) < len(pickle.dumps(Requests.of_events(evs)))


def test_requests_pickled_before_their_text_columns_were_packed_load():
    # Requests.of_events of these events as 16b959b pickled them (protocol 4: the columns as the
    # object's state), as a recovery store written then may hold them.
    old = bytes.fromhex(
        "800495c4000000000000008c0f73656e74696e656c2e6576656e7473948c085265717565737473949394298194284741"
        "da56bfc00000004741da56bfc04000004741da56bfc080000087948c03737663946805680587948c016d94680768078794"
        "4e4e4e87944e4e4e8794473ff0000000000000473ff0000000000000473ff000000000000087944e4e4e87944e4e4e8794"
        "4e4e4e87944e4e4e879489898987944e4e4e87948c027530948c027531948c0275329487944e4e4e87944e4e4e87944e4e"
        "4e87944e4e4e87947494622e")
    evs = [LLMEvent(1767571200.0 + i, "svc", "m", latency_ms=1.0, user_id=f"u{i}") for i in range(3)]
    assert pickle.loads(old) == Requests.of_events(evs)
    assert list(pickle.loads(old)) == evs


def test_a_snapshot_is_the_state_as_it_was(replay_lines):
    from sentinel.config import load_config_dict
    from operators.model_windows import ModelWindowLogic
    from sentinel.crosskey import CrossKey

    cfg = load_config_dict({"source": {"kind": "file", "path": "unused"}, "metrics": {"port": 0}})
    parser = parse_mod.BatchParser()
    first, second = [b for b in _batches(replay_lines[:4000], parts=1)]
    key, group = next((k, g) for tag, k, g in parser(first) if tag == "m")
    later = next(g for tag, k, g in parser(second) if tag == "m" and k == key)
    logic = ModelWindowLogic(cfg, None, CrossKey())
    logic.on_item((key,) + group)
    snap = pickle.dumps(logic.snapshot())
    before = pickle.dumps(pickle.loads(snap))
    logic.on_item((key,) + later)  # the live state moves on; the snapshot does not
    assert pickle.dumps(pickle.loads(snap)) == before
    assert frozen(None) is None
