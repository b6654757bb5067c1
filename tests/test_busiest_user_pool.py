"""A pooled mean's rise must hold without the ring's busiest user.

On a voice or chat key of a few requests a minute, a window is often one user's turns, and a
long conversation sends its whole history with every turn: one user's prompts at x5 the key's
usual for ten minutes paged as an input-token incident, though everybody else's prompts were
as ever. Where a key's recent requests are usually several users' (``SOLO_KEY``), a pool of
windows is judged without its busiest user as well (``PooledLogMean.judge``), and the drift
detector follows a window without that user where it sent most of the window; a key that is
one service account's is judged as it is, and a rise everybody shares still pages.
"""

import math
import random

from detectors.windowed import KeyDetectors
from operators.model_windows import WindowAgg
from sentinel.events import LLMEvent
from tests.helpers import poisson

T0 = 1767571200.0


def voice_windows(seed, minutes, rate=6.0, talker=None, users=2000, scale=lambda i: 1.0):
    """``rate`` requests a minute in conversations of a few turns each from ``users`` users; with
    ``talker=(a, b)`` one more user holds a conversation of five turns a minute from minute ``a``
    to ``b`` whose prompts grow to x8 the usual (its history); ``scale(i)`` multiplies everybody's
    prompts and answers."""
    rng = random.Random(seed)
    turns = []
    for i in range(minutes):
        agg = WindowAgg(T0 + 60 * i)
        for _ in range(poisson(rng, rate / 3.0)):
            turns.append([f"u{rng.randrange(users)}", 3])
        now = []
        for t in turns:
            now.append(t[0])
            t[1] -= 1
        turns = [t for t in turns if t[1] > 0]
        if talker is not None and talker[0] <= i < talker[1]:
            now += ["talker"] * 5
        for user in now:
            grow = 1.0 if user != "talker" else 3.0 + 5.0 * (i - talker[0]) / (talker[1] - talker[0])
            tokens = int(rng.lognormvariate(math.log(600), 0.4) * grow * scale(i))
            out = int(rng.lognormvariate(math.log(80), 0.5) * scale(i))
            agg.add(LLMEvent(T0 + 60 * i + rng.random() * 60, "voice", "m", latency_ms=rng.lognormvariate(7, 0.3),
                             input_tokens=tokens, output_tokens=out, cost_usd=(tokens + 4 * out) * 1e-7,
                             user_id=user))
        yield agg.features(60.0)


def _token_pages(windows):
    det = KeyDetectors()
    return [f for w in windows for f in det.update(w)
            if f.status == "firing" and f.type in ("tokens", "cost", "drift")]


def test_one_users_long_conversation_is_not_a_token_incident():
    pages = [f for seed in (1, 2, 3) for f in _token_pages(voice_windows(seed, 600, rate=3.0, talker=(400, 415)))]
    assert pages == [], pages


def test_a_rise_everybody_shares_still_pages():
    for seed in (1, 2):
        pages = _token_pages(voice_windows(seed, 600, scale=lambda i: 3.0 if 400 <= i < 415 else 1.0))
        assert pages and 400 * 60 <= pages[0].window_end - T0 <= 405 * 60, pages


def test_a_service_accounts_key_still_pages():
    # Every request is one account's: the busiest user is the key.
    for seed in (1, 2):
        pages = _token_pages(voice_windows(seed, 600, users=1, scale=lambda i: 3.0 if 400 <= i < 415 else 1.0))
        assert pages and 400 * 60 <= pages[0].window_end - T0 <= 405 * 60, pages


def test_the_busiest_users_sums_are_its_own_requests():
    # The window hands the pool its busiest user's sum of logs per metric (WindowFeatures.top),
    # summed over the smaller side: the user's requests, or the others' taken from the window's.
    rng = random.Random(5)
    for mine in (2, 5, 9):
        agg = WindowAgg(T0)
        for i in range(9):
            user = "a" if i < mine else f"u{i}"
            agg.add(LLMEvent(T0 + i, "chat", "m", latency_ms=900.0, input_tokens=rng.randrange(1, 5000),
                             output_tokens=rng.randrange(0, 500), cost_usd=rng.random() * 1e-3, user_id=user))
        f = agg.features(60.0)
        assert f.top[0] == "a"
        for attr, xs, off in (("in_log", agg.in_tok, 1.0), ("out_log", agg.out_tok, 1.0),
                              ("cost_log", agg.cost, 1e-6)):
            own = [math.log(x + off) if x > 0 else math.log(off) for x, u in zip(xs, agg.users) if u == "a"]
            assert f.top[1][attr][0] == mine and math.isclose(f.top[1][attr][1], sum(own), rel_tol=1e-9), attr
