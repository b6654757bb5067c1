"""Transport security: secrets from the environment or files, TLS contexts.

Secrets are never written in a flow definition. Where a setting is a secret
(a Kafka SASL password, a private key's password, a RabbitMQ password, a
Qdrant API key) the definition names where to read it::

    sasl.password: {env: KAFKA_PASSWORD}        # an environment variable
    sasl.password: {file: /run/secrets/kafka}   # a file (trailing newline dropped)

and it is read when a client connects. A literal value for such a key is a
configuration error (:func:`kafka_config_problem`), and messages about a
secret name where it comes from, never what it is.

>>> print(kafka_config_problem({"sasl.password": "hunter2"}))
sasl.password: a secret is never written in the flow definition; give {env: NAME} or {file: PATH}
>>> kafka_config_problem({"sasl.password": {"env": "KAFKA_PASSWORD"}, "sasl.username": "sentinel"}) is None
True
"""

from __future__ import annotations

import os
import ssl
from typing import Any, Dict, Mapping, Optional

# librdkafka settings that hold secrets.
KAFKA_SECRET_KEYS = frozenset({
    "sasl.password", "ssl.key.password", "ssl.keystore.password", "ssl.truststore.password",
    "sasl.oauthbearer.client.secret", "ssl.key.pem", "sasl.oauthbearer.config",
})


def is_ref(value: Any) -> bool:
    """True for a secret reference: ``{env: NAME}`` or ``{file: PATH}``."""
    return (isinstance(value, Mapping) and len(value) == 1 and next(iter(value)) in ("env", "file")
            and isinstance(next(iter(value.values())), str) and bool(next(iter(value.values()))))


def ref_problem(value: Any) -> Optional[str]:
    """Why ``value`` is not a secret reference, or None."""
    if is_ref(value):
        return None
    return "a secret is never written in the flow definition; give {env: NAME} or {file: PATH}"


def read_secret(value: Any, where: str) -> str:
    """The secret a reference names; a one-line ValueError naming ``where`` and the source when it cannot be read."""
    if not is_ref(value):
        raise ValueError(f"{where}: {ref_problem(value)}")
    (kind, name), = value.items()
    if kind == "env":
        v = os.environ.get(name)
        if not v:
            raise ValueError(f"{where}: environment variable {name} is not set or empty")
        return v
    try:
        with open(name, "r", encoding="utf-8") as f:
            v = f.read().rstrip("\r\n")
    except OSError as ex:
        raise ValueError(f"{where}: cannot read {name}: {ex.strerror or ex}") from None
    if not v:
        raise ValueError(f"{where}: {name} is empty")
    return v


def kafka_config_problem(config: Mapping[str, Any]) -> Optional[str]:
    """The first problem of a librdkafka ``config`` block as to secrets (``key: why``), or None.

    Secret keys must be references; a reference anywhere else is refused too
    (librdkafka would take the mapping for a value).
    """
    for k, v in config.items():
        if k in KAFKA_SECRET_KEYS:
            why = ref_problem(v)
            if why:
                return f"{k}: {why}"
        elif isinstance(v, Mapping):
            return f"{k}: only secrets ({', '.join(sorted(KAFKA_SECRET_KEYS))}) are read from env or file"
    return None


def kafka_settings(config: Mapping[str, Any], where: str = "kafka.config") -> Dict[str, Any]:
    """``config`` with every secret reference replaced by the secret (read now)."""
    return {k: (read_secret(v, f"{where}.{k}") if is_ref(v) else v) for k, v in config.items()}


def client_context(ca_file: Optional[str] = None, cert_file: Optional[str] = None, key_file: Optional[str] = None,
                   key_password: Optional[str] = None, verify: bool = True) -> ssl.SSLContext:
    """A TLS client context: the server verified against ``ca_file`` (else the system's CAs), hostname
    checked; with ``cert_file``/``key_file`` a client certificate for mutual TLS. TLS 1.2 at least.

    ``verify=False`` turns both checks off (for a test bench only; the README says so).
    """
    ctx = ssl.create_default_context(cafile=ca_file)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if cert_file:
        ctx.load_cert_chain(cert_file, key_file, password=key_password)
    return ctx


def context_for(tls: Any, where: str) -> Optional[ssl.SSLContext]:
    """The client context of a ``tls:`` block (``sentinel.config.TLSConfig``), or None without one."""
    if tls is None:
        return None
    password = read_secret(tls.key_password, f"{where}.tls.key_password") if tls.key_password else None
    try:
        return client_context(tls.ca_file, tls.cert_file, tls.key_file, password, tls.verify)
    except (OSError, ssl.SSLError) as ex:
        # Names the files, never the key's password.
        raise ValueError(f"{where}.tls: cannot load the CA, certificate or key "
                         f"({tls.ca_file or 'system CAs'}, {tls.cert_file or '-'}, {tls.key_file or '-'}): "
                         f"{getattr(ex, 'strerror', None) or ex.__class__.__name__}") from None


def rabbitmq_connection(sink: Any, where: str) -> Dict[str, Any]:
    """The RabbitMQ writer's ``password``, ``ssl_context`` and ``server_hostname`` of a rabbitmq sink's settings."""
    return {
        "password": read_secret(sink.password, f"{where}.password") if sink.password else None,
        "ssl_context": context_for(sink.tls, where),
        "server_hostname": sink.tls.server_hostname if sink.tls is not None else None,
    }


def secrets_problems(cfg: Any) -> list:
    """Every secret of a flow definition that cannot be read now, one line each (names, never values)."""
    problems = []

    def attempt(fn: Any) -> None:
        try:
            fn()
        except ValueError as ex:
            problems.append(str(ex))

    kafka = []
    if getattr(cfg.source, "kind", None) == "kafka":
        kafka.append(("source.config", cfg.source.config))
    for i, s in enumerate(cfg.sinks):
        where = f"sinks[{i}]"
        if s.kind == "kafka":
            kafka.append((where + ".config", s.config))
        elif s.kind == "rabbitmq":
            attempt(lambda s=s, w=where: rabbitmq_connection(s, w))
        elif s.kind == "qdrant" and s.api_key is not None:
            attempt(lambda s=s, w=where: read_secret(s.api_key, w + ".api_key"))
    if cfg.dead_letters.kind == "kafka":
        kafka.append(("dead_letters.config", cfg.dead_letters.config))
    if cfg.control is not None:
        kafka.append(("control.config", cfg.control.config))
    for where, conf in kafka:
        attempt(lambda c=conf, w=where: kafka_settings(c, w))
    return problems
