"""Webhook targets: internal addresses refused (net_guard) and signatures receivers can check."""

from __future__ import annotations

import ipaddress
import socket

import pytest

from app.core.errors import ConfigError
from app.core.net_guard import (
    ForbiddenAddress,
    GuardedResolver,
    UnresolvableHost,
    check_addresses,
    check_literal,
    check_url,
    forbidden_reason,
    parse_networks,
)
from app.core.settings import Settings
from app.core.webhook_signing import master_key, new_salt, sign, user_secret, verify

REFUSED = ["127.0.0.1", "127.9.9.9", "10.0.0.1", "172.16.5.4", "192.168.1.1", "169.254.169.254", "0.0.0.0",
           "224.0.0.1", "240.0.0.1", "100.64.0.1", "::1", "::", "fe80::1", "fc00::1", "ff02::1",
           "::ffff:127.0.0.1", "::ffff:10.0.0.1", "2002:7f00:1::", "64:ff9b::a9fe:a9fe"]
ALLOWED = ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8"]


@pytest.mark.parametrize("text", REFUSED)
def test_internal_addresses_are_refused(text):
    assert forbidden_reason(ipaddress.ip_address(text)) is not None
    with pytest.raises(ForbiddenAddress):
        check_literal(f"[{text}]" if ":" in text else text)


@pytest.mark.parametrize("text", ALLOWED)
def test_public_addresses_pass(text):
    assert forbidden_reason(ipaddress.ip_address(text)) is None
    assert check_literal(text) is True


def test_allowed_networks_open_only_themselves():
    allowed = parse_networks("127.0.0.0/8, 10.20.0.0/16")
    assert forbidden_reason(ipaddress.ip_address("127.0.0.1"), allowed=allowed) is None
    assert forbidden_reason(ipaddress.ip_address("::ffff:127.0.0.1"), allowed=allowed) is None
    assert forbidden_reason(ipaddress.ip_address("10.20.3.4"), allowed=allowed) is None
    assert forbidden_reason(ipaddress.ip_address("10.21.3.4"), allowed=allowed) is not None
    assert forbidden_reason(ipaddress.ip_address("::1"), allowed=allowed) is not None
    with pytest.raises(ConfigError, match="not a CIDR"):
        parse_networks("10.0.0.0/33")
    with pytest.raises(ConfigError, match="COSMIC_WEBHOOK_ALLOWED_NETWORKS"):
        Settings.from_env(environ={"COSMIC_WEBHOOK_ALLOWED_NETWORKS": "localhost"})


def test_a_name_is_refused_when_any_address_is_internal():
    assert check_addresses("ok.example", ["93.184.216.34"]) == ["93.184.216.34"]
    with pytest.raises(ForbiddenAddress, match="resolves to 10.0.0.1"):
        check_addresses("mixed.example", ["93.184.216.34", "10.0.0.1"])
    with pytest.raises(ForbiddenAddress):
        check_addresses("none.example", [])
    assert check_literal("hooks.example.org") is False  # a name: left to the resolver
    for name in ("localhost", "LOCALHOST.", "ip6-localhost"):
        with pytest.raises(ForbiddenAddress):
            check_literal(name)


async def test_check_url_resolves_names(monkeypatch):
    await check_url("https://93.184.216.34/hook")
    with pytest.raises(ForbiddenAddress):
        await check_url("http://[::ffff:127.0.0.1]:8080/x")
    with pytest.raises(UnresolvableHost):
        await check_url("https://no-such-host.invalid/hook")

    async def to_loopback(host, port, **kwargs):  # noqa: ANN001, ANN003
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", 0))]

    import asyncio

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", to_loopback)
    with pytest.raises(ForbiddenAddress, match="resolves to 127.0.0.1"):
        await check_url("https://rebind.example/hook")
    await check_url("https://rebind.example/hook", allowed=parse_networks("127.0.0.0/8"))


async def test_the_resolver_hands_on_only_checked_addresses(monkeypatch):
    resolver = GuardedResolver()

    async def answer(host, port=0, family=socket.AF_INET):  # noqa: ANN001
        return [{"hostname": host, "host": {"good.example": "93.184.216.34"}.get(host, "127.0.0.1"), "port": port,
                 "family": family, "proto": 0, "flags": 0}]

    monkeypatch.setattr(resolver._inner, "resolve", answer)
    assert [e["host"] for e in await resolver.resolve("good.example", 443)] == ["93.184.216.34"]
    with pytest.raises(ForbiddenAddress) as info:
        await resolver.resolve("evil.example", 443)
    assert isinstance(info.value, OSError)  # so aiohttp reports it as a connection error
    await resolver.close()


def test_signatures_verify_and_secrets_derive():
    settings = Settings(webhook_signing_key="master")
    key = master_key(settings)
    salt = new_salt()
    secret = user_secret(key=key, user_id="ann", salt=salt)
    assert secret.startswith("whsec_") and secret == user_secret(key=key, user_id="ann", salt=salt)
    assert secret != user_secret(key=key, user_id="bob", salt=salt)
    assert secret != user_secret(key=key, user_id="ann", salt=new_salt())
    body = b'{"notification_id":"n1"}'
    header = sign(secret=secret, body=body, timestamp=1_700_000_000)
    assert header.startswith("t=1700000000,v1=")
    assert verify(secret=secret, body=body, header=header, now=1_700_000_010)
    assert not verify(secret=secret, body=body + b" ", header=header, now=1_700_000_010)
    assert not verify(secret="whsec_other", body=body, header=header, now=1_700_000_010)
    assert not verify(secret=secret, body=body, header=header, now=1_700_001_000)  # too old: a replay
    assert not verify(secret=secret, body=body, header="garbage", now=1_700_000_010)
    assert master_key(Settings(jwt_secret="j")) != master_key(Settings(jwt_secret="k"))
    with pytest.raises(ConfigError, match="COSMIC_WEBHOOK_SIGNING_KEY"):
        master_key(Settings())
