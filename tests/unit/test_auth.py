"""Roles of a token (``app.core.auth``) and ``cosmic token issue``."""

from __future__ import annotations

import time

import jwt
import pytest
from click.testing import CliRunner

from app.core.auth import AuthError, mint_token, require_publisher, verify_token
from app.core.settings import Settings
from app.ops.cli import main, parse_ttl

SECRET = "unit-secret-" + "x" * 32


def _settings(**overrides: str) -> Settings:
    return Settings.from_env(environ={"COSMIC_JWT_SECRET": SECRET, **overrides})


def _headers(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize(("role", "publisher", "operator"), [
    ("publisher", True, False), ("operator", True, True), (None, False, False), ("user", False, False),
])
def test_only_publishers_and_operators_may_publish(role: str | None, publisher: bool, operator: bool) -> None:
    settings = _settings()
    token = mint_token(settings=settings, sub="svc", role=role)
    principal = verify_token(token=token, settings=settings)
    assert (principal.publisher, principal.operator) == (publisher, operator)
    if publisher:
        assert require_publisher(headers=_headers(token), query={}, settings=settings).user_id == "svc"
    else:
        with pytest.raises(AuthError) as refused:
            require_publisher(headers=_headers(token), query={}, settings=settings)
        assert refused.value.status == 403 and "publisher" in str(refused.value)


def test_publisher_role_comes_from_settings() -> None:
    settings = _settings(COSMIC_JWT_PUBLISHER_ROLE="platform-api")
    assert verify_token(token=mint_token(settings=settings, sub="api", role="platform-api"), settings=settings).publisher
    assert not verify_token(token=mint_token(settings=settings, sub="api", role="publisher"), settings=settings).publisher


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer not-a-jwt"}, {"Authorization": "Basic abc"}])
def test_publishing_without_a_valid_token_is_401(headers: dict[str, str]) -> None:
    with pytest.raises(AuthError) as refused:
        require_publisher(headers=headers, query={}, settings=_settings())
    assert refused.value.status == 401


def test_a_publisher_token_signed_with_another_key_is_401() -> None:
    forged = jwt.encode({"sub": "x", "aud": "cosmic-horizons", "exp": int(time.time()) + 60, "role": "publisher"},
                        "another-secret-" + "y" * 32, algorithm="HS256")
    with pytest.raises(AuthError) as refused:
        require_publisher(headers=_headers(forged), query={}, settings=_settings())
    assert refused.value.status == 401


@pytest.mark.parametrize(("text", "seconds"), [("90", 90), ("90s", 90), ("30m", 1800), ("1h", 3600), ("7d", 604800),
                                                ("1.5h", 5400)])
def test_parse_ttl(text: str, seconds: int) -> None:
    assert parse_ttl(text) == seconds


@pytest.mark.parametrize("text", ["", "h", "-1h", "0", "soon"])
def test_parse_ttl_refuses_what_is_not_a_positive_duration(text: str) -> None:
    import click

    with pytest.raises(click.BadParameter):
        parse_ttl(text)


@pytest.mark.parametrize(("role", "claim"), [("publisher", "publisher"), ("operator", "operator"), ("user", None)])
def test_token_issue_prints_a_token_with_the_role_and_lifetime(monkeypatch: pytest.MonkeyPatch, role: str,
                                                               claim: str | None) -> None:
    monkeypatch.setenv("COSMIC_JWT_SECRET", SECRET)
    result = CliRunner().invoke(main, ["token", "issue", "--sub", "ci-bot", "--role", role, "--ttl", "2h"])
    assert result.exit_code == 0, result.output
    claims = jwt.decode(result.output.strip(), SECRET, algorithms=["HS256"], audience="cosmic-horizons")
    assert claims["sub"] == "ci-bot" and claims.get("role") == claim
    assert 7190 <= claims["exp"] - time.time() <= 7200


def test_token_issue_without_a_secret_fails_with_a_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COSMIC_JWT_SECRET", raising=False)
    result = CliRunner().invoke(main, ["token", "issue", "--sub", "x", "--role", "publisher"])
    assert result.exit_code == 1 and "COSMIC_JWT_SECRET" in result.output


def test_token_issue_refuses_an_unknown_role(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COSMIC_JWT_SECRET", SECRET)
    result = CliRunner().invoke(main, ["token", "issue", "--sub", "x", "--role", "admin"])
    assert result.exit_code == 2 and "admin" in result.output
