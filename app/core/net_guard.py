"""Outbound connections to addresses users supply (webhooks): closed to internal addresses.

A user who may name a URL the worker connects to must not reach what only the worker can
reach: loopback admin ports, private networks, link-local cloud metadata (169.254.169.254).
An address is refused when it is loopback, private, link-local, multicast, unspecified or
reserved — IPv4 and IPv6, an IPv4-mapped or 6to4/Teredo IPv6 address judged by the IPv4
address inside — unless it lies in a network the operator allowed on purpose
(``COSMIC_WEBHOOK_ALLOWED_NETWORKS``, CIDRs).

The check runs twice:

* when preferences are stored (:func:`check_url`): the host, or every address its name
  resolves to, must be allowed — else :class:`ForbiddenAddress` (a 400 naming ``webhook_url``);
* when connecting (:class:`GuardedResolver`, the resolver of the one webhook HTTP session):
  the name is resolved again and only checked addresses are handed to the connector, so the
  connection goes to an address that was checked, whatever DNS answers later (rebinding).
  aiohttp does not call a resolver for an IP literal; :func:`check_literal` covers those
  before the request is made.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Any, Iterable
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver
from aiohttp.resolver import ThreadedResolver

from app.core.errors import ConfigError, CosmicError

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Names refused without asking DNS (resolvers map them to loopback anyway).
_LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})


class ForbiddenAddress(OSError, CosmicError):
    """A host that is, or resolves to, an address outbound connections may not go to.

    An OSError, so that aiohttp reports it from the resolver as a connection error
    (``ClientConnectorError.os_error``) instead of crashing the request machinery."""

    def __init__(self, message: str, *, host: str) -> None:
        super().__init__(message)
        self.host = host

    def __str__(self) -> str:
        return self.args[0]


class UnresolvableHost(CosmicError):
    """A host name that does not resolve (when preferences are stored)."""


def parse_networks(text: str) -> tuple[Network, ...]:
    """``COSMIC_WEBHOOK_ALLOWED_NETWORKS``: comma-separated CIDRs (``10.1.0.0/16, ::1/128``)."""
    networks = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError as exc:
            raise ConfigError(f"COSMIC_WEBHOOK_ALLOWED_NETWORKS: {item!r} is not a CIDR network: {exc}") from None
    return tuple(networks)


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped ::ffff:a.b.c.d, 6to4, Teredo, NAT64)."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in ipaddress.ip_network("64:ff9b::/96"):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address in ipaddress.ip_network("::/96") and int(address) > 1:  # deprecated IPv4-compatible
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def forbidden_reason(address: Address, *, allowed: Iterable[Network] = ()) -> str | None:
    """Why connecting to ``address`` is refused, or None when it may be connected to."""
    if any(address.version == net.version and address in net for net in allowed):
        return None
    inner = _embedded_ipv4(address) if isinstance(address, ipaddress.IPv6Address) else None
    if inner is not None:
        reason = forbidden_reason(inner, allowed=allowed)
        return f"embeds {inner}, which {reason}" if reason else None
    for attribute, words in (
        ("is_loopback", "is a loopback address"),
        ("is_unspecified", "is the unspecified address"),
        ("is_link_local", "is a link-local address"),
        ("is_multicast", "is a multicast address"),
        ("is_private", "is a private address"),
        ("is_reserved", "is a reserved address"),
        ("is_site_local", "is a site-local address"),
    ):
        if getattr(address, attribute, False):
            return words
    if not address.is_global:  # shared address space 100.64/10, benchmarking, documentation …
        return "is not a public address"
    return None


def _literal(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]").split("%")[0])
    except ValueError:
        return None


def check_literal(host: str, *, allowed: Iterable[Network] = ()) -> bool:
    """For an IP literal: raise ForbiddenAddress when it is refused; True when ``host`` is a
    literal (checked), False when it is a name (the resolver checks it)."""
    address = _literal(host)
    if address is None:
        if host.lower().rstrip(".") in _LOCAL_NAMES:
            raise ForbiddenAddress(f"{host} is a loopback name", host=host)
        return False
    reason = forbidden_reason(address, allowed=allowed)
    if reason is not None:
        raise ForbiddenAddress(f"{host} {reason}", host=host)
    return True


def check_addresses(host: str, addresses: Iterable[str], *, allowed: Iterable[Network] = ()) -> list[str]:
    """The addresses of ``host`` when every one is allowed; ForbiddenAddress naming the first
    refused one otherwise (one internal address among public ones is enough to refuse: which
    one a client connects to is not ours to choose)."""
    allowed = tuple(allowed)
    checked = []
    for text in addresses:
        address = _literal(text)
        if address is None:
            raise ForbiddenAddress(f"{host} resolved to {text!r}, which is not an IP address", host=host)
        reason = forbidden_reason(address, allowed=allowed)
        if reason is not None:
            raise ForbiddenAddress(f"{host} resolves to {address}, which {reason}", host=host)
        checked.append(text)
    if not checked:
        raise ForbiddenAddress(f"{host} resolved to no address", host=host)
    return checked


async def check_url(url: str, *, allowed: Iterable[Network] = (), timeout_s: float = 5.0) -> None:
    """Refuse a webhook URL whose host is, or resolves to, a refused address (ForbiddenAddress),
    or whose name does not resolve (UnresolvableHost)."""
    host = urlsplit(url).hostname or ""
    allowed = tuple(allowed)
    if check_literal(host, allowed=allowed):
        return
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(host, None, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP), timeout_s)
    except (OSError, asyncio.TimeoutError, UnicodeError) as exc:
        raise UnresolvableHost(f"{host} does not resolve ({type(exc).__name__}: {exc})") from None
    check_addresses(host, {info[4][0] for info in infos}, allowed=allowed)


class GuardedResolver(AbstractResolver):
    """aiohttp's threaded resolver, handing the connector only addresses that passed
    :func:`check_addresses` (raises ForbiddenAddress, an OSError, otherwise)."""

    def __init__(self, *, allowed: Iterable[Network] = ()) -> None:
        self._inner = ThreadedResolver()
        self._allowed = tuple(allowed)

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list[Any]:
        if host.lower().rstrip(".") in _LOCAL_NAMES:
            raise ForbiddenAddress(f"{host} is a loopback name", host=host)
        found = await self._inner.resolve(host, port, family)
        check_addresses(host, [entry["host"] for entry in found], allowed=self._allowed)
        return found

    async def close(self) -> None:
        await self._inner.close()
