"""Signed messages: the HMAC of control, feedback and alert messages, and the key that makes it.

A control or feedback message, an alert the flow writes to Kafka while a
control key is set, and a webhook's POST carry ``sentinel-signature:
sha256=<hex>``: the HMAC-SHA256 of the message bytes under the key.

>>> sign(b"k" * 16, b"{}")
'sha256=4bde3c95375d8d2a527a3d6b8f52182843c9ee4f432c44946a400ecdff859858'
"""

from __future__ import annotations

import hashlib
import hmac
import os
from typing import Optional

SIGNATURE_HEADER = "sentinel-signature"
MIN_KEY_BYTES = 16


def sign(key: bytes, value: bytes) -> str:
    """The ``sentinel-signature`` header value of a control or feedback message: ``sha256=<hex>``."""
    return "sha256=" + hmac.new(key, value, hashlib.sha256).hexdigest()


def load_key(env: Optional[str], path: Optional[str]) -> Optional[bytes]:
    """The signing key named by ``control.hmac_key_env`` / ``hmac_key_file`` (surrounding whitespace stripped).

    Raises ``ValueError`` with a one-line message naming the setting.
    """
    if env:
        value = os.environ.get(env)
        if value is None:
            raise ValueError(f"control.hmac_key_env: environment variable {env} is not set")
        key, where = value.encode().strip(), f"control.hmac_key_env: {env}"
    elif path:
        try:
            with open(path, "rb") as f:
                key = f.read().strip()
        except OSError as ex:
            raise ValueError(f"control.hmac_key_file: cannot read {path}: {ex.strerror or ex}") from None
        where = f"control.hmac_key_file: {path}"
    else:
        return None
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(f"{where} holds a key of {len(key)} bytes; use at least {MIN_KEY_BYTES} "
                         f"(e.g. 32 random bytes as hex)")
    return key
