"""The webhook sink: each alert POSTed as JSON to a URL, spooled and retried like the broker sinks.

The body is the alert's payload (a CloudEvents envelope by default, or the
bare alert with ``envelope: none``). Headers: ``Content-Type:
application/json``, ``X-Sentinel-Alert-Id``, and with a key
``X-Sentinel-Signature: sha256=<hex>``, the HMAC-SHA256 of the body (the
scheme of the control topic's ``sentinel-signature``), so the receiver can
check the sender.

:class:`HttpWriter` is what the HTTP sinks (this one, ``alertmanager``)
share: a 2xx response confirms; 408, 429 and 5xx, a timeout or a refused
connection are retried from the spool with backoff (:mod:`sinks.spooled`);
any other 4xx means the destination will never take that request: it is
logged, counted in ``sentinel_sink_errors_total{sink}`` and skipped, so one
bad alert cannot hold back the ones after it.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import httpx
import orjson

from sentinel.core.signing import sign
from sinks.base import Alert
from sinks.spooled import Progress, SpooledWriter

SIGNATURE_HEADER = "X-Sentinel-Signature"


class Retry(OSError):
    """A response worth retrying (408, 429, 5xx)."""


class HttpWriter(SpooledWriter):
    retry_on = (OSError, httpx.TransportError)

    def __init__(self, url: str, timeout: float, *, spool_dir: str, spool_max_bytes: int, drain_timeout: float,
                 adopt_spools: Sequence[str] = ()) -> None:
        self.url = url
        self.step_timeout = timeout
        self._client: Optional[httpx.Client] = httpx.Client(timeout=timeout, follow_redirects=False)
        super().__init__(spool_dir, spool_max_bytes, drain_timeout, adopt_spools)

    def _post(self, url: str, body: bytes, headers: Dict[str, str]) -> bool:
        """POST; True when accepted, False when refused for good (logged and counted); raises to retry."""
        r = self._client.post(url, content=body, headers={"Content-Type": "application/json", **headers})
        if 200 <= r.status_code < 300:
            return True
        if r.status_code in (408, 429) or r.status_code >= 500:
            raise Retry(f"{url} answered {r.status_code}: {r.text[:200]!r}")
        self._errors.inc()
        self._note_error(f"{url} refused an alert for good ({r.status_code}: {r.text[:200]!r}); skipped")
        return False

    def _where(self) -> str:
        return self.url

    def _disconnect(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def encode_record(alert: Alert, payload: bytes) -> bytes:
    """Spool record: ``[ingested_at, alert_id]``, a newline, the payload."""
    return orjson.dumps([alert.ingested_at, alert.alert_id]) + b"\n" + payload


def decode_record(record: bytes) -> Tuple[Optional[float], Optional[str], bytes]:
    head, _, body = record.partition(b"\n")
    ingested, alert_id = orjson.loads(head)
    return ingested, alert_id, body


class WebhookWriter(HttpWriter):
    kind = "webhook"

    def __init__(self, url: str, key: Optional[bytes] = None, headers: Optional[Dict[str, str]] = None,
                 timeout: float = 10.0, **spool) -> None:
        self.key = key
        self.headers = dict(headers or {})
        super().__init__(url, timeout, **spool)

    def _record(self, alert: Alert, payload: bytes) -> bytes:
        return encode_record(alert, payload)

    def _deliver(self, batch: List[Tuple[int, bytes]], progress: Progress) -> None:
        for seq, record in batch:
            if self._past_drain_deadline():
                return
            ingested, alert_id, body = decode_record(record)
            headers = dict(self.headers)
            if alert_id:
                headers["X-Sentinel-Alert-Id"] = str(alert_id)
            if self.key is not None:
                headers[SIGNATURE_HEADER] = sign(self.key, body)
            if self._post(self.url, body, headers):
                progress.confirm(seq, ingested)
            else:
                progress.skip(seq)
