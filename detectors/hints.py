"""Root-cause hints: where the cause of a per-key anomaly probably is.

Pure functions, called only when a finding fires or escalates, on data the
detectors already hold: the window's level of every metric of the key against
its baseline, and the error types counted in the anomalous windows. Each
returns at most :data:`MAX_HINTS` short sentences, most telling first, and
none that the data does not support.

``levels`` maps a metric name of :data:`detectors.windowed.METRICS` to
``(observed, expected, z)``: the window's value, the baseline's value and the
baseline's signed z-score. A metric absent from it (a key without streaming
has no time to first token) is not talked about.

Examples
--------
>>> levels = {"latency_p95_ms": (4000.0, 800.0, 9.0), "ttft_p95_ms": (1000.0, 200.0, 9.0)}
>>> latency_hints("latency_p95_ms", levels)[0]
'time to first token is up x5.0 too: the delay is before the first token (queueing or prefill at the provider)'
>>> error_hints({"rate_limit": 25, "timeout": 5})[0]
'83% of the errors (25 of 30) are rate_limit: a quota or rate limit at the provider, not a model fault'
"""

from __future__ import annotations

import re

from typing import Callable, Dict, List, Mapping, Optional, Tuple

MAX_HINTS = 3
# A metric moved when it is this far from its baseline in ratio AND in its own noise.
UP_RATIO = 1.3
MOVED_Z = 2.0
# It is normal when within this ratio of its baseline, or within one unit of its noise.
FLAT_RATIO = 1.15
FLAT_Z = 1.0
# Error types are named only from this many errors on.
MIN_ERRORS = 3
DOMINANT_SHARE = 0.5
SECOND_SHARE = 0.2
# Error-type key for the types past the per-window cap (operators/model_windows.py).
OTHER = "(other)"

Level = Tuple[float, float, float]  # observed, expected, z
Levels = Mapping[str, Level]

# (substrings of the lower-cased error type, what it means): first match wins.
ERROR_CLASSES: Tuple[Tuple[Tuple[str, ...], str], ...] = (
    (("rate_limit", "ratelimit", "rate-limit", "rate limit", "429", "quota", "throttl", "too_many_requests",
      "resource_exhausted"),
     "a quota or rate limit at the provider, not a model fault"),
    (("timeout", "timed_out", "timed out", "deadline", "504", "408"),
     "the provider is slow to answer (timeouts)"),
    (("server", "5xx", "500", "502", "503", "529", "internal", "unavailable", "overload", "bad_gateway"),
     "provider-side failures (server errors)"),
    (("auth", "401", "403", "permission", "forbidden", "api_key"),
     "requests are refused (authentication or permission): a key or access problem on the calling side"),
    (("invalid", "bad_request", "400", "context_length", "validation"),
     "the provider rejects the requests as invalid: a change in prompts or parameters on the calling side"),
)
# Error types that say no more than "it failed" (OTLP span status ERROR without error.type).
UNTYPED = (None, "", "error")


def _ratio(levels: Levels, metric: str) -> Optional[float]:
    lv = levels.get(metric)
    if lv is None or not (lv[0] > 0 and lv[1] > 0):
        return None
    return lv[0] / lv[1]


def moved_up(levels: Levels, metric: str) -> Optional[float]:
    """The ratio to expected when ``metric`` is clearly up (>= 1.3x and z >= 2), else None."""
    r = _ratio(levels, metric)
    if r is not None and r >= UP_RATIO and levels[metric][2] >= MOVED_Z:
        return r
    return None


def is_flat(levels: Levels, metric: str) -> bool:
    """True when ``metric`` is known and at its usual level (within 15%, or within its own noise)."""
    lv = levels.get(metric)
    if lv is None:
        return False
    r = _ratio(levels, metric)
    return abs(lv[2]) < FLAT_Z or (r is not None and 1.0 / FLAT_RATIO <= r <= FLAT_RATIO)


def _traffic(levels: Levels, tail: str) -> Optional[str]:
    r = moved_up(levels, "request_count")
    return f"traffic is x{r:.1f} its usual level (requests per window): {tail}" if r else None


def _done(hints: List[Optional[str]]) -> List[str]:
    return [h for h in hints if h][:MAX_HINTS]


def latency_hints(metric: str, levels: Levels) -> List[str]:
    """Where the time goes on a slow key: before the first token, longer answers, or slower generation.

    ``metric`` is the latency metric that fired (p95 or median); a p95 alert
    with a normal median is a slow tail.
    """
    ttft = moved_up(levels, "ttft_p95_ms")
    out_tok = moved_up(levels, "output_tokens_mean")
    in_tok = moved_up(levels, "input_tokens_mean")
    hints: List[Optional[str]] = []
    if ttft:
        hints.append(f"time to first token is up x{ttft:.1f} too: the delay is before the first token "
                     f"(queueing or prefill at the provider)")
    if out_tok:
        hints.append(f"answers are x{out_tok:.1f} longer (output tokens): longer generations take longer")
    elif not ttft and is_flat(levels, "output_tokens_mean"):
        if is_flat(levels, "ttft_p95_ms"):
            hints.append("time to first token is normal: generation itself is slower (decode speed)")
        elif "ttft_p95_ms" not in levels:
            hints.append("answers are their usual length (output tokens): each request is slower, not longer")
    if in_tok:
        hints.append(f"prompts are x{in_tok:.1f} larger (input tokens)"
                     + (": a longer prefill" if ttft else ""))
    if metric == "latency_p95_ms" and is_flat(levels, "latency_p50_ms"):
        hints.append("median latency is normal: only the slowest requests are slower (the tail)")
    hints.append(_traffic(levels, "the slowdown comes with more load"))
    return _done(hints)


def ttft_hints(levels: Levels) -> List[str]:
    """Why the first token comes late: larger prompts (prefill), or the provider itself."""
    in_tok = moved_up(levels, "input_tokens_mean")
    hints: List[Optional[str]] = []
    if in_tok:
        hints.append(f"prompts are x{in_tok:.1f} larger (input tokens): a longer prompt lengthens prefill")
    elif is_flat(levels, "input_tokens_mean"):
        hints.append("prompts are their usual size (input tokens): the provider is slower to start answering "
                     "(queueing or prefill capacity)")
    hints.append(_traffic(levels, "the slowdown comes with more load"))
    return _done(hints)


def _token_growth(levels: Levels) -> Tuple[str, str]:
    """Which side of the exchange grew, and the phrase that says by how much.

    ``("both" | "output" | "input" | "", phrase)``: the prompts (input tokens),
    the answers (output tokens), both, or neither (empty phrase).
    """
    out_tok = moved_up(levels, "output_tokens_mean")
    in_tok = moved_up(levels, "input_tokens_mean")
    if out_tok and in_tok:
        return "both", f"prompts are x{in_tok:.1f} larger and answers x{out_tok:.1f} longer"
    if out_tok:
        return "output", f"answers are x{out_tok:.1f} longer (output tokens)"
    if in_tok:
        return "input", f"prompts are x{in_tok:.1f} larger (input tokens)"
    return "", ""


def tokens_hints(levels: Levels) -> List[str]:
    """Which side of the exchange grew: the prompts (input) or the answers (output), and what it costs."""
    side, grew = _token_growth(levels)
    hints: List[Optional[str]] = []
    if side == "both":
        hints.append(f"{grew}: the service is used differently (a new caller, feature or prompt template)")
    elif side == "output":
        same = ", prompts their usual size" if is_flat(levels, "input_tokens_mean") else ""
        hints.append(f"{grew}{same}: a change in instructions, max_tokens or the model's behaviour")
    elif side == "input":
        same = ", answers their usual length" if is_flat(levels, "output_tokens_mean") else ""
        hints.append(f"{grew}{same}: more context is sent (retrieval results, chat history or a prompt template)")
    cost = moved_up(levels, "cost_per_request_usd")
    if cost and side:
        hints.append(f"cost per request is up x{cost:.1f} with them")
    return _done(hints)


def cost_hints(levels: Levels) -> List[str]:
    """Whether a dearer request is more tokens or a dearer token."""
    side, grew = _token_growth(levels)
    hints: List[Optional[str]] = []
    if side:
        hints.append(f"{grew}: the cost follows the tokens")
    elif is_flat(levels, "input_tokens_mean") and is_flat(levels, "output_tokens_mean"):
        hints.append("tokens per request are normal: the price per token changed "
                     "(a pricing change, another model version or a routing change)")
    return _done(hints)


def _meaning(error_type: Optional[str]) -> Optional[str]:
    if error_type in UNTYPED or error_type == OTHER:
        return None
    low = error_type.lower()
    for needles, meaning in ERROR_CLASSES:
        if any(n in low for n in needles):
            return meaning
    return None


# An error type is repeated in a hint only when it looks like a class name or a
# status code (``rate_limit``, ``openai.APIError``, ``HTTP 503``): at most three
# words of letters (and ``_.:-``) or three-digit codes, 40 characters in all,
# so a message, an address or a key that landed in the field never reaches an
# alert.
_WORD = r"(?:[A-Za-z][A-Za-z_.:\-]*|[1-5][0-9]{2})"
_SAFE_TYPE = re.compile(r"(?=.{1,40}$)%s(?: %s){0,2}" % (_WORD, _WORD))


def _name(error_type: Optional[str]) -> str:
    if error_type in UNTYPED:
        return "untyped"
    if error_type == OTHER:
        return "other"
    return error_type if _SAFE_TYPE.fullmatch(error_type) else "an unlisted error type"


def _share_hint(error_type: Optional[str], n: int, total: int, first: bool) -> str:
    pct = f"{100.0 * n / total:.0f}%"
    head = f"{pct} of the errors ({n} of {total})" if first else f"{pct} of them ({n})"
    if error_type in UNTYPED:
        return f"{head} carry no error type"
    meaning = _meaning(error_type)
    return f"{head} are {_name(error_type)}" + (f": {meaning}" if meaning else "")


def error_hints(error_types: Optional[Mapping[Optional[str], int]], levels: Optional[Levels] = None) -> List[str]:
    """The dominant error types and their share, and what each usually means.

    ``error_types`` counts the errors of the anomalous windows by
    ``LLMEvent.error_type`` (None: the event named none). Nothing is said
    below :data:`MIN_ERRORS` errors; with no type at half of them or more the
    mix is listed.
    """
    hints: List[Optional[str]] = []
    counts = sorted(((n, t) for t, n in (error_types or {}).items() if n > 0),
                    key=lambda x: (-x[0], "" if x[1] is None else x[1]))
    total = sum(n for n, _ in counts)
    if total >= MIN_ERRORS:
        n0, t0 = counts[0]
        if n0 / total >= DOMINANT_SHARE:
            hints.append(_share_hint(t0, n0, total, True))
            if len(counts) > 1 and counts[1][0] / total >= SECOND_SHARE:
                hints.append(_share_hint(counts[1][1], counts[1][0], total, False))
        else:
            mix = ", ".join(f"{_name(t)} {100.0 * n / total:.0f}%" for n, t in counts[:3])
            hints.append(f"no single error type dominates ({total} errors): {mix}")
    if levels:
        hints.append(_traffic(levels, "the errors come with more load"))
    return _done(hints)


HINTS: Dict[str, Callable[[str, Levels, Optional[Mapping[Optional[str], int]]], List[str]]] = {
    "latency": lambda metric, levels, errors: latency_hints(metric, levels),
    "ttft": lambda metric, levels, errors: ttft_hints(levels),
    "tokens": lambda metric, levels, errors: tokens_hints(levels),
    "cost": lambda metric, levels, errors: cost_hints(levels),
    "error_rate": lambda metric, levels, errors: error_hints(errors, levels),
}


def hints_for(type_: str, metric: str, levels: Levels,
              error_types: Optional[Mapping[Optional[str], int]] = None) -> List[str]:
    """Hints for an alert of ``type_`` on ``metric``; [] for types without hints (traffic, drift, ...)."""
    fn = HINTS.get(type_)
    return fn(metric, levels, error_types) if fn is not None else []
