"""The incident store sink: every alert into the SQL incident store (:mod:`sentinel.store`).

Spooled like the RabbitMQ and Kafka sinks (:mod:`sinks.spooled`): ``write``
appends to the worker's on-disk spool, a sender thread stores each batch in
one transaction and acknowledges it once committed. A database that is down
is retried with backoff while alerts wait in the spool. Storing is
idempotent by ``alert_id``: a batch delivered again after a lost commit
acknowledgement adds nothing.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import orjson
from sqlalchemy.exc import OperationalError, ProgrammingError, SQLAlchemyError

from sinks.base import Alert
from sinks.spooled import Progress, SpooledWriter


def encode_record(alert: Alert, payload: bytes) -> bytes:
    """Spool record: the ingest time (for the detection latency), a newline, the bare alert."""
    return orjson.dumps(alert.ingested_at) + b"\n" + payload


def decode_record(record: bytes) -> Tuple[Optional[float], dict]:
    head, _, body = record.partition(b"\n")
    return orjson.loads(head), orjson.loads(body)


class IncidentStoreWriter(SpooledWriter):
    kind = "incident_store"
    retry_on = (OSError, SQLAlchemyError)

    def __init__(self, url: str, password_env: Optional[str] = None, table_prefix: str = "", *,
                 spool_dir: str, spool_max_bytes: int, drain_timeout: float,
                 adopt_spools: Sequence[str] = ()) -> None:
        self._url, self._password_env, self._prefix = url, password_env, table_prefix
        self.store = None
        super().__init__(spool_dir, spool_max_bytes, drain_timeout, adopt_spools)

    def _open(self) -> None:
        from sentinel.store import Store

        self.store = Store(self._url, self._password_env, self._prefix)  # creates the tables: fails now if it cannot

    def _record(self, alert: Alert, payload: bytes) -> bytes:
        return encode_record(alert, payload)

    def _deliver(self, batch: List[Tuple[int, bytes]], progress: Progress) -> None:
        decoded = [(seq,) + decode_record(rec) for seq, rec in batch]
        self.store.store_alerts([a for _, _, a in decoded])
        for seq, ingested, _ in decoded:
            progress.confirm(seq, ingested)

    def _fatal_error(self, exc: BaseException) -> Optional[BaseException]:
        if isinstance(exc, ProgrammingError) and not isinstance(exc, OperationalError):
            return exc  # the tables are not what this version writes: no retry fixes that
        return None

    def _where(self) -> str:
        return "the incident store %s" % (self.store.url.render_as_string(hide_password=True) if self.store else "")

    def _disconnect(self) -> None:
        if self.store is not None:
            self.store.close()
