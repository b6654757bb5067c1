"""Masking of personal data and secrets in everything that leaves the flow.

One :class:`Masker` is applied where data leaves: alerts at the alert sinks
(:class:`sinks.base.AlertSink`, so every alert sink and the Qdrant incident
memory get the same masked alert), dead letters at the dead-letter sink, and
log lines (:class:`LogFilter` on the handlers of the root logger). It never
runs on the per-event path.

What is masked in text (each kind can be turned off in ``privacy:``):

- e-mail addresses -> ``<email>``
- phone numbers written as phone numbers (``+44 20 7946 0958``,
  ``(415) 555-2671``, ``415-555-2671``) -> ``<phone>``
- card numbers of 13 to 19 digits that pass the Luhn check -> ``<card>``
- IBANs whose mod-97 checksum holds -> ``<iban>``
- API keys and tokens: ``sk-...``, ``Bearer ...``, AWS access key ids
  (``AKIA...``, ``ASIA...``), GitHub and Slack tokens, JWTs -> ``<secret>``
- IPv4 and IPv6 addresses -> ``<ip>`` (``ips``), but loopback and
  unspecified addresses (``127.0.0.1``, ``::1``, ``0.0.0.0``), which name
  no one and keep the flow's own log lines readable

With a pseudonym key, the actor an alert names (``subject``, and the
``user_id`` / ``tenant_id`` / ``actor`` / ``source_ip`` fields of its
evidence) is replaced everywhere in the alert, summary included, by a stable
keyed pseudonym ``anon:<16 hex>`` = the first 64 bits of
HMAC-SHA256(key, id): the same id gets the same pseudonym in every process
and run that has the same key, so incidents stay tellable apart and
countable, and whoever holds the key can check a suspect id against one.

>>> m = Masker()
>>> m.text("mail bob@example.com from 10.1.2.3, card 4111 1111 1111 1111")
'mail <email> from <ip>, card <card>'
>>> m.text("Latency of search-rag/gpt-4o is 3,200 ms, above its usual 800 ms.")
'Latency of search-rag/gpt-4o is 3,200 ms, above its usual 800 ms.'
>>> Masker(pseudonym_key=b"k").pseudonym("user:u1")
'anon:c84045b1cbd6c3ac'
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import re
from typing import Any, Callable, Dict, FrozenSet, Iterable, List, Optional, Pattern, Tuple

EMAIL = "<email>"
PHONE = "<phone>"
CARD = "<card>"
IBAN = "<iban>"
SECRET = "<secret>"
IP = "<ip>"

_SECRET_RE = re.compile(
    r"\bsk-(?:[A-Za-z0-9]+-)*[A-Za-z0-9_]{16,}"          # OpenAI-style keys (sk-..., sk-proj-...)
    r"|\bBearer\s+[A-Za-z0-9._~+/=-]{8,}"                 # HTTP bearer tokens
    r"|\b(?:AKIA|ASIA)[0-9A-Z]{16}(?![0-9A-Z])"                    # AWS access key ids
    r"|\bgh[pousr]_[A-Za-z0-9]{30,}"                      # GitHub tokens
    r"|\bxox[abposr]-[A-Za-z0-9-]{10,}"                   # Slack tokens
    r"|\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"  # JWTs
)
_EMAIL_RE = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
_IBAN_RE = re.compile(r"(?<![A-Z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}(?![A-Z0-9])")
_CARD_RE = re.compile(r"(?<![\d.,])\d(?:[ -]?\d){12,18}(?!\d)")
_PHONE_RE = re.compile(
    r"(?<![\w+])\+\d{1,3}(?:[ .-]?\(?\d{1,4}\)?){2,5}(?!\d)"      # international: +44 20 7946 0958
    r"|(?<!\w)\(\d{3}\)[ .-]?\d{3}[ .-]\d{4}(?!\d)"               # (415) 555-2671
    r"|(?<![\d.-])\d{3}[.-]\d{3}[.-]\d{4}(?![\d.-])"                 # 415-555-2671
)
_IPV4_RE = re.compile(r"(?<![\d.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
                      r"(?!\d|\.\d)")
_IPV6_RE = re.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{0,4}|\d+\.\d+\.\d+\.\d+)(?![\w:])")
_PSEUDONYM = re.compile(r"(anon:[0-9a-f]{16})(?![0-9a-f])")
# Cheap gates: a pattern runs only on text that could hold what it looks for.
_SECRET_HINTS = re.compile(r"sk-|Bearer|AKIA|ASIA|gh[pousr]_|xox|eyJ")
_RUN = re.compile(r"\d[\d ().-]{5,}\d")           # cards, phones: a run of digits
_IBAN_GATE = re.compile(r"[A-Z]{2}\d\d")
_DOTTED = re.compile(r"\d\.\d{1,3}\.\d")          # IPv4
_COLONS = re.compile(r"[0-9A-Fa-f]?:[0-9A-Fa-f]*:")  # IPv6

# Alert fields that are structure, not content: never rewritten.
STRUCTURAL = frozenset({"alert_id", "fingerprint", "type", "severity", "metric", "detector", "event_time",
                        "detected_at", "status", "fired_event_time"})
# Fields naming an actor: pseudonymised when there is a key.
ID_FIELDS = frozenset({"subject", "user_id", "tenant_id", "actor", "source_ip"})
# Subjects that name no one (a budget, a model; operators/budgets.py), a pseudonym already, a placeholder.
NOT_ACTORS = ("budget:", "model:", "anon:", "\x00")


def luhn_ok(digits: str) -> bool:
    """True when a string of digits passes the Luhn check (card numbers)."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def iban_ok(iban: str) -> bool:
    """True when an IBAN (spaces allowed) has a valid mod-97 checksum."""
    s = iban.replace(" ", "")
    if not 15 <= len(s) <= 34:
        return False
    s = s[4:] + s[:4]
    try:
        return int("".join(str(int(c, 36)) for c in s)) % 97 == 1
    except ValueError:
        return False


def _card(m: "re.Match[str]") -> str:
    digits = re.sub(r"[ -]", "", m.group(0))
    if 13 <= len(digits) <= 19 and luhn_ok(digits) and len(set(digits)) > 1:
        return CARD
    return m.group(0)


def _iban(m: "re.Match[str]") -> str:
    return IBAN if iban_ok(m.group(0)) else m.group(0)


def _phone(m: "re.Match[str]") -> str:
    n = sum(c.isdigit() for c in m.group(0))
    return PHONE if 8 <= n <= 15 else m.group(0)


def _ipv4(m: "re.Match[str]") -> str:
    s = m.group(0)
    return s if s.startswith("127.") or s == "0.0.0.0" else IP  # loopback and "any" name no one


def _ipv6(m: "re.Match[str]") -> str:
    s = m.group(0)
    if s.count(":") < 2:
        return s
    try:
        a = ipaddress.IPv6Address(s)
    except ValueError:
        return s
    return s if a.is_loopback or a.is_unspecified else IP


class Masker:
    """Masks text, alerts and dead letters; see the module docstring for what."""

    def __init__(self, emails: bool = True, phones: bool = True, cards: bool = True, ibans: bool = True,
                 secrets: bool = True, ips: bool = True, pseudonym_key: Optional[bytes] = None,
                 id_fields: Iterable[str] = ID_FIELDS) -> None:
        steps: List[Tuple[Pattern[str], Any, str]] = []  # (pattern, replacement, gate)
        if secrets:
            steps.append((_SECRET_RE, SECRET, "secret"))
        if emails:
            steps.append((_EMAIL_RE, EMAIL, "at"))
        if ibans:
            steps.append((_IBAN_RE, _iban, "iban"))
        if cards:
            steps.append((_CARD_RE, _card, "run"))
        if phones:
            steps.append((_PHONE_RE, _phone, "run"))
        if ips:
            steps.append((_IPV4_RE, _ipv4, "dotted"))
            steps.append((_IPV6_RE, _ipv6, "colons"))
        self._steps = steps
        self._key = pseudonym_key
        self.id_fields: FrozenSet[str] = frozenset(id_fields)

    # -- text ----------------------------------------------------------------

    def text(self, s: str) -> str:
        """``s`` with every enabled kind of personal data and secret replaced by its token.

        Pseudonyms (``anon:`` and 16 hex digits) are left as they are: their
        digits could pass for a card number or a phone.
        """
        if "anon:" in s:
            parts = _PSEUDONYM.split(s)
            return "".join(p if i % 2 else self._text(p) for i, p in enumerate(parts))
        return self._text(s)

    def _text(self, s: str) -> str:
        run: Optional[bool] = None
        for pattern, repl, gate in self._steps:
            if gate == "run":
                if run is None:
                    run = _RUN.search(s) is not None
                if not run:
                    continue
            elif gate == "iban":
                if _IBAN_GATE.search(s) is None:
                    continue
            elif gate == "at":
                if "@" not in s:
                    continue
            elif gate == "secret":
                if _SECRET_HINTS.search(s) is None:
                    continue
            elif gate == "dotted":
                if "." not in s or _DOTTED.search(s) is None:
                    continue
            elif ":" not in s or _COLONS.search(s) is None:
                continue
            s = pattern.sub(repl, s)
        return s

    def pseudonym(self, value: str) -> str:
        """The stable keyed pseudonym of an id (needs a key)."""
        if self._key is None:
            raise ValueError("no pseudonym key")
        return "anon:" + hmac.new(self._key, value.encode("utf-8"), hashlib.sha256).hexdigest()[:16]

    def value(self, v: Any, skip: FrozenSet[str] = frozenset(), swap: Optional[Callable[[str], str]] = None) -> Any:
        """A copy of a JSON-like value with every string masked (keys in ``skip`` left as they are)."""
        if isinstance(v, str):
            return self.text(swap(v) if swap is not None else v)
        if isinstance(v, dict):
            return {k: (x if k in skip else self.value(x, skip, swap)) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [self.value(x, skip, swap) for x in v]
        return v

    # -- alerts and dead letters ---------------------------------------------

    def _ids(self, v: Any, out: Dict[str, str], keep: bool = False) -> None:
        if isinstance(v, dict):
            for k, x in v.items():
                if k in self.id_fields and isinstance(x, str) and x and not x.startswith(NOT_ACTORS):
                    out.setdefault(x, f"\x00{len(out)}\x00" if keep else self.pseudonym(x))
                elif isinstance(x, (dict, list)):
                    self._ids(x, out, keep)
        elif isinstance(v, list):
            for x in v:
                self._ids(x, out, keep)

    def alert(self, alert: Dict[str, Any]) -> Dict[str, Any]:
        """A masked copy of an alert; internal ``_`` fields and structural fields kept as they are.

        The actor the alert names is what an operator acts on (the source to
        block, the user to throttle): with a key it becomes its pseudonym
        everywhere in the alert; without one it is kept as it is, in its
        fields and in the text around it, and everything else is masked.

        >>> a = {"type": "coordinated_attack", "subject": "198.51.100.7",
        ...      "summary": "14 guardrail events from 198.51.100.7; mail ops@example.com",
        ...      "evidence": {"source_ip": "198.51.100.7", "first_peer": "203.0.113.9"}}
        >>> out = Masker().alert(a)
        >>> out["subject"], out["summary"], out["evidence"]["first_peer"]
        ('198.51.100.7', '14 guardrail events from 198.51.100.7; mail <email>', '<ip>')
        >>> Masker(pseudonym_key=b"k" * 16).alert(a)["summary"].startswith("14 guardrail events from anon:")
        True
        """
        swap = None
        ids: Dict[str, str] = {}
        if self._key is not None:
            self._ids(alert, ids)
            if ids:
                swap = _swapper(ids)
        else:
            self._ids(alert, ids, keep=True)
            if ids:
                return _unprotect(self._mask(_protect(alert, ids), None), ids)
        return self._mask(alert, swap)

    def _mask(self, alert: Dict[str, Any], swap: Optional[Callable[[str], str]]) -> Dict[str, Any]:
        out: Dict[str, Any] = {}
        for k, v in alert.items():
            if k in STRUCTURAL or k.startswith("_"):
                out[k] = v
            else:
                out[k] = self.value(v, STRUCTURAL, swap)
        return out

    def dead_letter(self, record: Dict[str, Any], keep_original: bool = False) -> Dict[str, Any]:
        """A dead-letter record (``sentinel.parse.dead_letter_to_dict``) with its detail and raw line masked.

        A raw that is not UTF-8 (``raw_base64``) is masked byte for byte (read
        as Latin-1, so every byte that is not part of a match stays as it
        was) and stays base64. ``raw_masked: true`` marks a raw that was
        changed. ``keep_original`` returns the record as it is.

        >>> Masker().dead_letter({"reason": "bad_json", "raw": '{"email": "a@b.example"'})
        {'reason': 'bad_json', 'raw': '{"email": "<email>"', 'raw_masked': True}
        """
        if keep_original:
            return record
        out = dict(record)
        if isinstance(out.get("detail"), str):
            out["detail"] = self.text(out["detail"])
        if isinstance(out.get("raw"), str):
            raw = self.text(out["raw"])
            if raw != out["raw"]:
                out["raw"], out["raw_masked"] = raw, True
        if isinstance(out.get("raw_base64"), str):
            import base64

            text = base64.b64decode(out["raw_base64"]).decode("latin-1")
            masked = self.text(text)
            if masked != text:
                out["raw_base64"] = base64.b64encode(masked.encode("latin-1")).decode("ascii")
                out["raw_masked"] = True
        return out


def _protect(v: Any, ids: Dict[str, str]) -> Any:
    """``v`` with every actor id replaced by its placeholder (``\\x00n\\x00``, which no mask matches)."""
    swap = _swapper(ids)

    def walk(x: Any) -> Any:
        if isinstance(x, str):
            return swap(x)
        if isinstance(x, dict):
            return {k: walk(y) for k, y in x.items()}
        if isinstance(x, (list, tuple)):
            return [walk(y) for y in x]
        return x

    return walk(v)


def _unprotect(v: Any, ids: Dict[str, str]) -> Any:
    back = {p: i for i, p in ids.items()}
    pattern = re.compile("\x00\\d+\x00")

    def walk(x: Any) -> Any:
        if isinstance(x, str):
            return pattern.sub(lambda m: back.get(m.group(0), m.group(0)), x) if "\x00" in x else x
        if isinstance(x, dict):
            return {k: walk(y) for k, y in x.items()}
        if isinstance(x, list):
            return [walk(y) for y in x]
        return x

    return walk(v)


def _swapper(ids: Dict[str, str]) -> Callable[[str], str]:
    pattern = re.compile("|".join(r"(?<![\w.@-])%s(?![\w@-]|\.\w)" % re.escape(i)
                                  for i in sorted(ids, key=len, reverse=True)))

    def swap(s: str) -> str:
        return pattern.sub(lambda m: ids[m.group(0)], s) if s else s

    return swap


# -- configuration and the process-wide masker of log lines ---------------------


def load_pseudonym_key(env: Optional[str], path: Optional[str]) -> Optional[bytes]:
    """The pseudonym key from an environment variable or a file; a one-line ValueError when it is unusable."""
    import os

    if env:
        v = os.environ.get(env)
        if not v:
            raise ValueError(f"privacy.pseudonym_key_env: environment variable {env} is not set or empty")
        key = v.encode("utf-8")
    elif path:
        try:
            with open(path, "rb") as f:
                key = f.read().strip()
        except OSError as ex:
            raise ValueError(f"privacy.pseudonym_key_file: cannot read {path}: {ex.strerror or ex}") from None
        if not key:
            raise ValueError(f"privacy.pseudonym_key_file: {path} is empty")
    else:
        return None
    if len(key) < 16:
        raise ValueError("privacy: the pseudonym key must be at least 16 bytes")
    return key


def masker_for(privacy: Any) -> Optional[Masker]:
    """The masker of a ``privacy:`` block (``sentinel.config.PrivacyConfig``), or None when it is off."""
    if privacy is None or not privacy.enabled:
        return None
    key = load_pseudonym_key(privacy.pseudonym_key_env, privacy.pseudonym_key_file)
    return Masker(emails=privacy.emails, phones=privacy.phones, cards=privacy.cards, ibans=privacy.ibans,
                  secrets=privacy.secrets, ips=privacy.ips, pseudonym_key=key)


_log_masker: Optional[Masker] = Masker()


def configure_logs(masker: Optional[Masker]) -> None:
    """The masker log lines go through (None: log lines are not masked)."""
    global _log_masker
    _log_masker = masker


class LogFilter(logging.Filter):
    """Masks every log record's message (and its traceback) with the process's masker."""

    def filter(self, record: logging.LogRecord) -> bool:
        m = _log_masker
        if m is None:
            return True
        try:
            msg = record.getMessage()
        except Exception:  # a bad format string: leave it to the handler to report
            return True
        masked = m.text(msg)
        if masked != msg or record.args:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = m.text(record.exc_text)
        return True


def install_log_filter(logger: Optional[logging.Logger] = None) -> None:
    """Put a :class:`LogFilter` on every handler of ``logger`` (the root logger by default), once."""
    logger = logger or logging.getLogger()
    for h in logger.handlers:
        if not any(isinstance(f, LogFilter) for f in h.filters):
            h.addFilter(LogFilter())
