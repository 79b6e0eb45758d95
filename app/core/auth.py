"""JWT authentication for the HTTP API and the websocket feed.

Tokens are HS256 (``COSMIC_JWT_SECRET``) or RS256 (``COSMIC_JWT_PUBLIC_KEY_FILE``); ``sub`` is
the user id, ``exp`` and ``aud`` (``COSMIC_JWT_AUDIENCE``) are required and checked, and a
``role`` claim equal to ``COSMIC_JWT_OPERATOR_ROLE`` makes an operator. Tokens travel in the
``Authorization: Bearer`` header, never in a query string. Publishing events
(``POST /api/events``) needs the ``COSMIC_JWT_PUBLISHER_ROLE`` role (or the operator's).
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import jwt

from app.core.errors import CosmicError
from app.core.settings import Settings


class AuthError(CosmicError):
    """A request without a valid token (401) or without the right role (403)."""

    def __init__(self, message: str, *, status: int = 401) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, kw_only=True)
class Principal:
    user_id: str
    role: str | None
    operator: bool
    #: May publish events: the publisher role, or an operator.
    publisher: bool = False


@functools.cache
def _public_key(path: str) -> str:
    return Path(path).read_text()


def _key_and_algorithms(settings: Settings) -> tuple[Any, list[str]]:
    if settings.jwt_public_key_file:
        return _public_key(settings.jwt_public_key_file), ["RS256"]
    if settings.jwt_secret:
        return settings.jwt_secret, ["HS256"]
    raise AuthError("authentication is not configured on this server (COSMIC_JWT_SECRET or COSMIC_JWT_PUBLIC_KEY_FILE)")


def verify_token(*, token: str, settings: Settings) -> Principal:
    """Decode and check ``token``; raise AuthError naming what is wrong."""
    key, algorithms = _key_and_algorithms(settings)
    try:
        claims = jwt.decode(
            token, key, algorithms=algorithms, audience=settings.jwt_audience,
            options={"require": ["exp", "sub", "aud"]},
        )
    except jwt.ExpiredSignatureError as exc:
        raise AuthError("token expired") from exc
    except jwt.InvalidAudienceError as exc:
        raise AuthError("token has the wrong audience") from exc
    except jwt.MissingRequiredClaimError as exc:
        raise AuthError(f"token lacks the {exc.claim!r} claim") from exc
    except jwt.PyJWTError as exc:
        raise AuthError(f"invalid token: {exc}") from exc
    role = claims.get("role")
    operator = role == settings.jwt_operator_role
    return Principal(user_id=str(claims["sub"]), role=role, operator=operator,
                     publisher=operator or role == settings.jwt_publisher_role)


def bearer_token(headers: Mapping[str, str]) -> str:
    value = headers.get("Authorization", "")
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError("missing bearer token (send `Authorization: Bearer <jwt>`)")
    return token.strip()


def authenticate(*, headers: Mapping[str, str], query: Mapping[str, str], settings: Settings) -> Principal:
    """The caller of an HTTP request; tokens in the query string are refused."""
    for name in ("token", "access_token", "jwt"):
        if name in query:
            raise AuthError("tokens are not accepted in the query string; use the Authorization header")
    return verify_token(token=bearer_token(headers), settings=settings)


def require_operator(*, headers: Mapping[str, str], query: Mapping[str, str], settings: Settings) -> Principal:
    principal = authenticate(headers=headers, query=query, settings=settings)
    if not principal.operator:
        raise AuthError(f"operator role required (user {principal.user_id} has role {principal.role!r})", status=403)
    return principal


def require_publisher(*, headers: Mapping[str, str], query: Mapping[str, str], settings: Settings) -> Principal:
    """The caller, if it may publish events (publisher or operator role); else 401/403."""
    principal = authenticate(headers=headers, query=query, settings=settings)
    if not principal.publisher:
        raise AuthError(f"publisher or operator role required to publish events (user {principal.user_id} "
                        f"has role {principal.role!r})", status=403)
    return principal


def mint_token(*, settings: Settings, sub: str, role: str | None = None, ttl_s: int = 3600) -> str:
    """An HS256 token for local use and tests (needs COSMIC_JWT_SECRET)."""
    if not settings.jwt_secret:
        raise AuthError("minting needs COSMIC_JWT_SECRET")
    claims: dict[str, Any] = {"sub": sub, "aud": settings.jwt_audience, "exp": int(time.time()) + ttl_s,
                              "iat": int(time.time())}
    if role:
        claims["role"] = role
    return jwt.encode(claims, settings.jwt_secret, algorithm="HS256")
