"""``sentinel api``: the operator's REST and WebSocket API over the incident store.

FastAPI served by uvicorn. Every ``/api/v1`` route needs a bearer token
(:mod:`sentinel.auth`); ``/healthz``, ``/readyz`` and the OpenAPI pages
(``/docs``, ``/openapi.json``) do not. Silences and feedback are stored (with
an audit entry) and sent, signed, to the flow's control and feedback topics,
so they reach every flow process. The live stream (``WS /api/v1/stream``)
follows the alerts table as the incident store sink fills it.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional

import orjson
from fastapi import Depends, FastAPI, Query, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from starlette.concurrency import run_in_threadpool

from sentinel.auth import AuthError, Authenticator, Principal
from sentinel.config import require_utc_offset
from sentinel.core.times import iso, parse_iso
from sentinel.core.types import SEVERITIES
from sentinel.store import Store

log = logging.getLogger("sentinel.api")

PAGE = Path(__file__).with_name("static") / "index.html"

MATCHER_NAMES = ("service", "model", "type", "severity", "subject", "metric")
STATUSES = ("open", "firing", "updated", "escalated", "resolved")


class ControlPublisher:
    """Signed messages to the flow's control and feedback topics (see :mod:`sentinel.control`)."""

    def __init__(self, brokers: str, control_topic: Optional[str], feedback_topic: Optional[str],
                 config: Dict[str, Any], key: Optional[bytes]) -> None:
        from confluent_kafka import Producer

        self.control_topic, self.feedback_topic, self.key = control_topic, feedback_topic, key
        self._producer = Producer({"bootstrap.servers": brokers, **config, "acks": "all",
                                   "enable.idempotence": True})

    def close(self) -> None:
        self._producer.flush(5)
        self._producer = None

    def send(self, topic: str, msg: Dict[str, Any], key: str, timeout: float = 10.0) -> None:
        """Produce one message and wait for the broker's acknowledgement (raises ``RuntimeError`` otherwise)."""
        from sentinel.control import SIGNATURE_HEADER, sign

        value = orjson.dumps(msg)
        headers = [(SIGNATURE_HEADER, sign(self.key, value))] if self.key is not None else None
        result: List[Any] = []
        self._producer.produce(topic, value, key=key.encode(), headers=headers,
                               on_delivery=lambda err, _m: result.append(err))
        self._producer.flush(timeout)
        if not result:
            raise RuntimeError(f"no acknowledgement from Kafka for {topic} within {timeout:.0f}s")
        if result[0] is not None:
            raise RuntimeError(f"Kafka refused the message to {topic}: {result[0]}")


# -- request bodies ------------------------------------------------------------------


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Matcher(_Body):
    """One Alertmanager-style matcher: ``op`` is ``=``, ``!=``, ``=~`` or ``!~`` (a regex matches the whole value).

    Alertmanager's own form (``isRegex``, ``isEqual``) is accepted too.
    """

    name: Literal["service", "model", "type", "severity", "subject", "metric"]
    value: str = Field(max_length=256)
    op: Optional[Literal["=", "!=", "=~", "!~"]] = None
    isRegex: Optional[bool] = None
    isEqual: Optional[bool] = None

    @model_validator(mode="after")
    def _op(self) -> "Matcher":
        if self.op is None:
            regex, equal = bool(self.isRegex), self.isEqual is not False
            self.op = ("=~" if equal else "!~") if regex else ("=" if equal else "!=")
        if self.op in ("=~", "!~"):
            try:
                re.compile(self.value)
            except re.error as ex:
                raise ValueError(f"value is not a regular expression: {ex}") from None
        elif self.op == "=" and not self.value:
            raise ValueError("an equality matcher needs a non-empty value")
        return self

    def plain(self) -> Dict[str, str]:
        return {"name": self.name, "op": self.op, "value": self.value}


class SilenceIn(_Body):
    matchers: List[Matcher] = Field(min_length=1, max_length=32)
    startsAt: Optional[datetime] = None  # default: now
    endsAt: Optional[datetime] = None  # or duration
    duration: Optional[float] = Field(default=None, gt=0)  # seconds, or "2h"
    comment: str = Field(default="", max_length=1024)

    @field_validator("duration", mode="before")
    @classmethod
    def _dur(cls, v: Any) -> Any:
        from sentinel.config import parse_duration

        return None if v is None else parse_duration(v)

    _aware = field_validator("startsAt", "endsAt")(require_utc_offset)

    @model_validator(mode="after")
    def _end(self) -> "SilenceIn":
        if (self.endsAt is None) == (self.duration is None):
            raise ValueError("give endsAt or duration (one of them)")
        return self


class FeedbackIn(_Body):
    label: Literal["true_positive", "false_positive"]
    comment: str = Field(default="", max_length=1024)


# -- the app -------------------------------------------------------------------------


def _error(status: int, detail: str, headers: Optional[Dict[str, str]] = None) -> JSONResponse:
    kind = {401: "unauthorized", 403: "forbidden", 404: "not_found", 409: "conflict",
            503: "unavailable"}.get(status, "error")
    return JSONResponse({"error": kind, "detail": detail}, status_code=status, headers=headers)


class ApiError(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status


def _csv(v: Optional[str], allowed: tuple, name: str) -> Optional[List[str]]:
    if not v:
        return None
    items = [x.strip() for x in v.split(",") if x.strip()]
    bad = [x for x in items if x not in allowed]
    if bad:
        raise ApiError(400, f"{name}: unknown value(s) {bad[:5]}; use {', '.join(allowed)}")
    return items


def _time_param(v: Optional[str], name: str) -> Optional[float]:
    if v is None:
        return None
    try:
        return float(v)
    except ValueError:
        pass
    try:
        dt = parse_iso(v)
    except ValueError:
        raise ApiError(400, f"{name}: not an RFC 3339 time or epoch seconds: {v[:64]!r}") from None
    if dt.tzinfo is None:
        raise ApiError(400, f"{name}: needs a UTC offset, e.g. 2026-01-05T10:00:00Z")
    return dt.timestamp()


def create_app(store: Store, auth: Authenticator, publisher: Optional[ControlPublisher] = None,
               max_silence: float = 7 * 86400.0, stream_poll: float = 0.5) -> FastAPI:
    app = FastAPI(title="LLM-Sentinel API", version="1",
                  description="Incidents, silences and feedback of LLM-Sentinel. Bearer JWT; roles viewer, "
                              "operator, admin.")
    app.state.store, app.state.auth, app.state.publisher = store, auth, publisher

    @app.exception_handler(AuthError)
    async def _auth_error(_request: Request, exc: AuthError) -> JSONResponse:
        headers = {"WWW-Authenticate": 'Bearer error="invalid_token"'} if exc.status == 401 else None
        return _error(exc.status, str(exc), headers)

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, str(exc))

    def role(needed: str):
        def dep(request: Request) -> Principal:
            p = auth.authenticate(request.headers.get("authorization"))
            if not p.allows(needed):
                raise AuthError(403, f"role {p.role} may not do this; it needs {needed} or higher")
            return p
        return dep

    viewer, operator, admin = Depends(role("viewer")), Depends(role("operator")), Depends(role("admin"))

    @app.get("/", include_in_schema=False)
    def page() -> HTMLResponse:
        """The on-call page (no data in it: it asks the API with the token the user gives)."""
        return HTMLResponse(PAGE.read_text(encoding="utf-8"), headers={
            "Content-Security-Policy": "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                                       "connect-src 'self' ws: wss:",
            "Cache-Control": "no-store"})

    @app.get("/healthz", tags=["health"])
    def healthz() -> Dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    def readyz() -> JSONResponse:
        try:
            store.ping()
        except Exception as ex:
            return JSONResponse({"status": "unavailable", "detail": f"incident store: {type(ex).__name__}"},
                                status_code=503)
        return JSONResponse({"status": "ready"})

    @app.get("/api/v1/incidents", tags=["incidents"])
    def list_incidents(
        service: Optional[str] = None, model: Optional[str] = None, type: Optional[str] = None,
        severity: Optional[str] = Query(None, description="comma-separated severities"),
        status: Optional[str] = Query(None, description="comma-separated: open, firing, updated, escalated, "
                                                        "resolved"),
        since: Optional[str] = Query(None, description="opened at or after (RFC 3339 or epoch seconds)"),
        until: Optional[str] = Query(None, description="opened before"),
        limit: int = Query(50, ge=1, le=500), offset: int = Query(0, ge=0, le=10_000_000),
        _p: Principal = viewer,
    ) -> Dict[str, Any]:
        total, items = store.list_incidents(service, model, type, _csv(severity, SEVERITIES, "severity"),
                                            _csv(status, STATUSES, "status"), _time_param(since, "since"),
                                            _time_param(until, "until"), limit, offset)
        return {"total": total, "limit": limit, "offset": offset, "items": items}

    @app.get("/api/v1/incidents/{incident_id}", tags=["incidents"])
    def get_incident(incident_id: str, _p: Principal = viewer) -> Dict[str, Any]:
        inc = store.get_incident(incident_id)
        if inc is None:
            raise ApiError(404, f"no incident {incident_id[:64]!r}")
        return inc

    @app.post("/api/v1/incidents/{incident_id}/feedback", status_code=201, tags=["incidents"])
    def feedback(incident_id: str, body: FeedbackIn, p: Principal = operator) -> Dict[str, Any]:
        inc = store.get_incident(incident_id)
        if inc is None:
            raise ApiError(404, f"no incident {incident_id[:64]!r}")
        if publisher is None or not publisher.feedback_topic:
            raise ApiError(503, "the flow definition has no feedback topic: feedback could not reach the flow")
        first = inc["alerts"][0] if inc["alerts"] else {}
        alert_id = first.get("alert_id")
        msg = {"alert_id": alert_id, "fingerprint": inc.get("fingerprint"), "label": body.label,
               "reason": body.comment, "who": p.sub}
        try:
            publisher.send(publisher.feedback_topic, msg, key=incident_id)
        except RuntimeError as ex:
            raise ApiError(503, str(ex)) from None
        store.add_feedback(incident_id, alert_id, body.label, body.comment, p.sub)
        return {"incident_id": incident_id, "alert_id": alert_id, "label": body.label, "by": p.sub}

    @app.get("/api/v1/silences", tags=["silences"])
    def list_silences(state: Optional[Literal["active"]] = None, _p: Principal = viewer) -> Dict[str, Any]:
        return {"items": store.list_silences(active_only=state == "active")}

    @app.post("/api/v1/silences", status_code=201, tags=["silences"])
    def create_silence(body: SilenceIn, p: Principal = operator) -> Dict[str, Any]:
        now = time.time()
        start = body.startsAt.timestamp() if body.startsAt is not None else now
        end = body.endsAt.timestamp() if body.endsAt is not None else start + body.duration
        if end <= start or end <= now:
            raise ApiError(400, "the silence must end after it starts and after now")
        if end - start > max_silence:
            raise ApiError(400, f"a silence may last at most {max_silence / 3600:g}h")
        if publisher is None or not publisher.control_topic:
            raise ApiError(503, "the flow definition has no control topic: the silence could not reach the flow")
        sid = "api-" + uuid.uuid4().hex[:16]
        matchers = [m.plain() for m in body.matchers]
        msg: Dict[str, Any] = {"action": "silence", "id": sid, "start": iso(start), "end": iso(end),
                               "comment": body.comment, "created_by": p.sub,
                               "matchers": {m["name"]: m["value"] for m in matchers if m["op"] == "="}}
        others = [m for m in matchers if m["op"] != "="]
        if others:
            msg["match"] = others
        try:
            publisher.send(publisher.control_topic, msg, key=sid)
        except RuntimeError as ex:
            raise ApiError(503, str(ex)) from None
        return store.add_silence(sid, matchers, start, end, body.comment, p.sub)

    @app.get("/api/v1/silences/{silence_id}", tags=["silences"])
    def get_silence(silence_id: str, _p: Principal = viewer) -> Dict[str, Any]:
        s = store.get_silence(silence_id)
        if s is None:
            raise ApiError(404, f"no silence {silence_id[:64]!r}")
        return s

    @app.delete("/api/v1/silences/{silence_id}", tags=["silences"])
    def expire_silence(silence_id: str, p: Principal = operator) -> Dict[str, Any]:
        s = store.get_silence(silence_id)
        if s is None:
            raise ApiError(404, f"no silence {silence_id[:64]!r}")
        if s["expired_at"] is not None:
            raise ApiError(409, f"silence {silence_id!r} is already expired")
        if publisher is None or not publisher.control_topic:
            raise ApiError(503, "the flow definition has no control topic: the expiry could not reach the flow")
        try:
            publisher.send(publisher.control_topic, {"action": "expire", "id": silence_id}, key=silence_id)
        except RuntimeError as ex:
            raise ApiError(503, str(ex)) from None
        store.expire_silence(silence_id, p.sub)
        return store.get_silence(silence_id)

    @app.get("/api/v1/audit", tags=["audit"])
    def audit(after: int = Query(0, ge=0), limit: int = Query(100, ge=1, le=1000),
              _p: Principal = admin) -> Dict[str, Any]:
        return {"items": store.audit_entries(after, limit)}

    @app.websocket("/api/v1/stream")
    async def stream(ws: WebSocket, service: Optional[str] = None, severity: Optional[str] = None,
                     token: Optional[str] = None, after: Optional[int] = None) -> None:
        """Alerts as they are stored: ``{"seq": n, "alert": {...}}`` per message.

        The token comes as ``?token=`` (browsers cannot set headers on a
        WebSocket) or in the Authorization header. ``severity`` takes a
        comma-separated list; ``after`` replays from a stored ``seq``.
        """
        # "Live" starts when the connection is asked for: alerts stored from then on are sent.
        seq = after if after is not None else await run_in_threadpool(store.last_alert_seq)
        await ws.accept()
        try:
            p = auth.authenticate(ws.headers.get("authorization"), token)
            sevs = set(_csv(severity, SEVERITIES, "severity") or ())
        except AuthError as ex:
            await ws.send_json({"error": "unauthorized" if ex.status == 401 else "forbidden", "detail": str(ex)})
            await ws.close(code=4000 + ex.status)
            return
        except ApiError as ex:
            await ws.send_json({"error": "error", "detail": str(ex)})
            await ws.close(code=4400)
            return
        log.info("stream opened by %s (%s)", p.sub, p.role)
        closed = asyncio.ensure_future(ws.receive())  # the client's close (or the server's shutdown)
        try:
            while True:
                rows = await run_in_threadpool(store.alerts_after, seq)
                for s, alert in rows:
                    seq = s
                    if service and alert.get("service") != service:
                        continue
                    if sevs and alert.get("severity") not in sevs:
                        continue
                    await ws.send_json({"seq": s, "alert": alert})
                if not rows:
                    done, _ = await asyncio.wait({closed}, timeout=stream_poll)
                    if done:
                        if closed.result().get("type") == "websocket.disconnect":
                            return
                        closed = asyncio.ensure_future(ws.receive())  # a message from the client: ignored
        except (WebSocketDisconnect, RuntimeError):
            return
        finally:
            closed.cancel()

    return app


def build(cfg: Any) -> FastAPI:
    """The app for a flow definition: its first incident_store sink, its control settings, ``api``."""
    from sentinel.config import IncidentStoreSink
    from sentinel.control import load_key

    s = next((s for s in cfg.sinks if isinstance(s, IncidentStoreSink)), None)
    if s is None:
        raise ValueError("sinks: the flow definition has no incident_store sink for the API to read")
    store = Store(s.url, s.password_env, s.table_prefix)
    auth = Authenticator(cfg.api.auth)
    publisher = None
    max_silence = cfg.api.max_silence
    c = cfg.control_settings()
    if c is not None:
        publisher = ControlPublisher(c.brokers, c.topic, c.feedback_topic, c.config,
                                     load_key(c.hmac_key_env, c.hmac_key_file))
        max_silence = min(max_silence, c.max_silence)
    return create_app(store, auth, publisher, max_silence, cfg.api.stream_poll)


def serve(config_path: str, host: Optional[str] = None, port: Optional[int] = None) -> int:
    """``sentinel api -c FLOW``: exit 2 with one line on a bad definition, key or store."""
    import sys

    import uvicorn

    from sentinel.config import ConfigError, load_config
    from sentinel.store import StoreError

    try:
        cfg = load_config(config_path)
        app = build(cfg)
    except (ConfigError, ValueError, StoreError) as ex:
        print(f"{config_path}: {ex}", file=sys.stderr)
        return 2
    except Exception as ex:  # the database does not answer
        print(f"{config_path}: incident store: {type(ex).__name__}: {str(ex).splitlines()[0][:300]}", file=sys.stderr)
        return 2
    config = uvicorn.Config(app, host=host or cfg.api.host, port=port or cfg.api.port, log_level="info",
                            ws_max_size=1 << 16, timeout_graceful_shutdown=5)
    for name in ("uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).addFilter(_redact_tokens)
    uvicorn.Server(config).run()
    return 0


_TOKEN_IN_QUERY = re.compile(r"(token=)[^&\s\"']+")


def _redact_tokens(record: logging.LogRecord) -> bool:
    """Logging filter: a ``token=`` query parameter (the WebSocket's) is logged as ``token=<redacted>``."""
    if record.args:
        record.args = tuple(_TOKEN_IN_QUERY.sub(r"\1<redacted>", a) if isinstance(a, str) else a
                            for a in (record.args if isinstance(record.args, tuple) else (record.args,)))
    if isinstance(record.msg, str) and "token=" in record.msg:
        record.msg = _TOKEN_IN_QUERY.sub(r"\1<redacted>", record.msg)
    return True
