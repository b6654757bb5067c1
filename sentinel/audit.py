"""``sentinel audit verify``: check the incident store's hash-chained audit trail (see :mod:`sentinel.store`)."""

from __future__ import annotations

import sys
from typing import Optional


def verify_command(config_path: str, expect_head: Optional[str] = None) -> int:
    """Exit 0 when the chain is intact, 1 when an entry was changed, removed or reordered, 2 on a bad setup."""
    from sentinel.config import ConfigError, IncidentStoreSink, load_config
    from sentinel.store import Store, StoreError, verify_audit

    try:
        cfg = load_config(config_path)
        s = next((s for s in cfg.sinks if isinstance(s, IncidentStoreSink)), None)
        if s is None:
            raise ValueError("sinks: the flow definition has no incident_store sink")
        store = Store(s.url, s.password_env, s.table_prefix, create=False)
        ok, n, msg = verify_audit(store, expect_head)
    except (ConfigError, ValueError, StoreError) as ex:
        print(f"{config_path}: {ex}", file=sys.stderr)
        return 2
    except Exception as ex:  # the database does not answer, the tables are not there
        print(f"{config_path}: incident store: {type(ex).__name__}: {str(ex).splitlines()[0][:300]}", file=sys.stderr)
        return 2
    if ok:
        print(f"audit: ok: {msg}")
        return 0
    print(f"audit: TAMPERED: {msg} ({n} entries verified before it)", file=sys.stderr)
    return 1
