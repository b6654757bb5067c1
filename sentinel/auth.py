"""Bearer tokens of ``sentinel api``: JWT (PyJWT), HS256 with a shared secret or RS256 with a public key / JWKS.

A token must carry ``sub`` (who), ``exp`` and a role: ``role`` (a string) or
``roles`` (a list; the highest counts). Roles are ordered: ``viewer`` reads,
``operator`` also silences and gives feedback, ``admin`` also reads the
audit trail. ``aud`` and ``iss`` are checked when the API is configured with
them. Keys are read from an environment variable or a file, never from the
flow definition.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, Dict, Optional

import jwt

ROLES = ("viewer", "operator", "admin")
RANK = {r: i for i, r in enumerate(ROLES)}
MIN_SECRET_BYTES = 32


class AuthError(Exception):
    """A request that is refused: ``status`` 401 (no valid token) or 403 (role too low)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Principal:
    sub: str
    role: str

    def allows(self, needed: str) -> bool:
        return RANK[self.role] >= RANK[needed]


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as ex:
        raise ValueError(f"api.auth.{what}: cannot read {path}: {ex.strerror or ex}") from None


def load_secret(secret_env: Optional[str], secret_file: Optional[str]) -> bytes:
    if secret_file:
        key, where = _read(secret_file, "secret_file").strip(), f"api.auth.secret_file: {secret_file}"
    else:
        value = os.environ.get(secret_env or "")
        if value is None:
            raise ValueError(f"api.auth.secret_env: environment variable {secret_env} is not set "
                             f"(the HS256 secret of the API's tokens)")
        key, where = value.encode().strip(), f"api.auth.secret_env: {secret_env}"
    if len(key) < MIN_SECRET_BYTES:
        raise ValueError(f"{where} holds a secret of {len(key)} bytes; use at least {MIN_SECRET_BYTES}")
    return key


class Authenticator:
    """Checks bearer tokens against the configured key (``sentinel.config.ApiAuthConfig``)."""

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg
        self.algorithm = cfg.algorithm
        self._key: Any = None
        self._jwks: Optional[jwt.PyJWKSet] = None
        if cfg.algorithm == "HS256":
            self._key = load_secret(cfg.secret_env, cfg.secret_file)
        elif cfg.public_key_file:
            pem = _read(cfg.public_key_file, "public_key_file")
            try:
                from cryptography.hazmat.primitives.serialization import load_pem_public_key

                self._key = load_pem_public_key(pem)
            except ValueError:
                raise ValueError(f"api.auth.public_key_file: {cfg.public_key_file} is not a PEM public key") from None
        else:
            raw = _read(cfg.jwks_file, "jwks_file")
            try:
                self._jwks = jwt.PyJWKSet.from_json(raw.decode())
            except Exception as ex:
                raise ValueError(f"api.auth.jwks_file: {cfg.jwks_file} is not a usable JWKS: {ex}") from None

    def _verify_key(self, token: str) -> Any:
        if self._jwks is None:
            return self._key
        kid = jwt.get_unverified_header(token).get("kid")
        for k in self._jwks.keys:
            if kid is None or k.key_id == kid:
                return k.key
        raise AuthError(401, f"no key with kid {str(kid)[:64]!r} in the JWKS")

    def authenticate(self, authorization: Optional[str] = None, token: Optional[str] = None) -> Principal:
        """The principal of a request's ``Authorization: Bearer ...`` header (or a bare ``token``)."""
        if token is None:
            if not authorization:
                raise AuthError(401, "missing bearer token (Authorization: Bearer <JWT>)")
            scheme, _, token = authorization.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise AuthError(401, "the Authorization header must be 'Bearer <JWT>'")
            token = token.strip()
        try:
            claims = jwt.decode(
                token, self._verify_key(token), algorithms=[self.algorithm], audience=self.cfg.audience,
                issuer=self.cfg.issuer, leeway=self.cfg.leeway,
                options={"require": ["exp", "sub"], "verify_aud": self.cfg.audience is not None})
        except jwt.ExpiredSignatureError:
            raise AuthError(401, "token expired") from None
        except jwt.InvalidSignatureError:
            raise AuthError(401, "token signature is not valid") from None
        except jwt.InvalidAlgorithmError:
            raise AuthError(401, f"token is not signed with {self.algorithm}") from None
        except jwt.PyJWTError as ex:
            raise AuthError(401, f"invalid token: {ex}") from None
        return Principal(str(claims["sub"])[:128], _role(claims))


def _role(claims: Dict[str, Any]) -> str:
    roles = claims.get("roles")
    if isinstance(roles, list):
        known = [r for r in roles if r in RANK]
        if known:
            return max(known, key=RANK.__getitem__)
    role = claims.get("role")
    if role in RANK:
        return role
    raise AuthError(403, f"token names no role; needs 'role' (or 'roles') among {', '.join(ROLES)}")


def make_token(key: Any, sub: str, role: str, ttl: float = 3600.0, algorithm: str = "HS256",
               audience: Optional[str] = None, issuer: Optional[str] = None, kid: Optional[str] = None,
               now: Optional[float] = None) -> str:
    """A signed token for ``sub`` with ``role``, valid ``ttl`` seconds."""
    if role not in RANK:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    t = int(now if now is not None else time.time())
    claims: Dict[str, Any] = {"sub": sub, "role": role, "iat": t, "exp": t + int(ttl)}
    if audience:
        claims["aud"] = audience
    if issuer:
        claims["iss"] = issuer
    return jwt.encode(claims, key, algorithm=algorithm, headers={"kid": kid} if kid else None)


def token_command(config_path: str, role: str, sub: str, ttl: float) -> int:
    """``sentinel token``: print an HS256 token signed with the API's secret (exit 2 with one line otherwise)."""
    import sys

    from sentinel.config import ConfigError, load_config

    try:
        cfg = load_config(config_path).api.auth
        if cfg.algorithm != "HS256":
            raise ValueError("api.auth.algorithm is RS256: tokens come from the issuer holding the private key")
        key = load_secret(cfg.secret_env, cfg.secret_file)
        print(make_token(key, sub, role, ttl, audience=cfg.audience, issuer=cfg.issuer))
    except (ConfigError, ValueError) as ex:
        print(f"{config_path}: {ex}", file=sys.stderr)
        return 2
    return 0
