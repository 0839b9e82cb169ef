"""Which addresses a webhook may connect to: public ones only, unless the endpoint says
``allow_private: true``.

An alert webhook is an outbound request to a URL from a configuration file; left
unchecked it could reach the dispatcher's own loopback services, the private network or
a cloud metadata service (server-side request forgery). So every connection is checked
**at connect time, on the address actually connected to**: the host is resolved once,
each resolved address is classified, and the socket connects to an address that passed
(never to the name again). A name that resolved to a public address before and resolves
to ``127.0.0.1`` now (DNS rebinding) is refused now. Literal IP URLs are checked the
same way, without a lookup.

Refused (unless ``allow_private``): loopback, private (RFC 1918, IPv6 unique-local),
link-local, unspecified, multicast, reserved and every other non-global range (e.g. the
shared ``100.64.0.0/10``), the known metadata addresses (:data:`METADATA_ADDRESSES`), and
IPv6 addresses that carry one of those IPv4 addresses (IPv4-mapped ``::ffff:a.b.c.d``,
NAT64 ``64:ff9b::/96``, 6to4 ``2002::/16``). When a name resolves to several addresses,
the refused ones are skipped and the connection goes to a permitted one; when none is
permitted the attempt fails with :class:`DestinationRefusedError`.

Behind an HTTP(S) proxy (``HTTPS_PROXY`` / ``HTTP_PROXY`` and not ``NO_PROXY``) the proxy
makes the connection, so the dispatcher cannot see that address: it checks the
destination by resolving it itself just before the request (literal IPs exactly) and
connects to the proxy without a check (the proxy is the operator's own choice). The proxy
resolves the name again, so there the rebinding protection is the proxy's job (an egress
proxy that refuses private destinations, e.g. smokescreen).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, TypeAlias

from agentwatch.schemas.errors import AgentwatchError

__all__ = [
    "METADATA_ADDRESSES",
    "DestinationRefusedError",
    "Destinations",
    "IPAddress",
    "Resolver",
    "check_host",
    "refusal_kind",
    "system_resolver",
]

IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address

Resolver: TypeAlias = Callable[[str, int], Sequence[str]]
"""``(host, port) -> addresses`` (IP address strings), in the order to try them."""

METADATA_ADDRESSES: Final[frozenset[IPAddress]] = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean, Oracle instance metadata
        "169.254.170.2",  # AWS ECS task metadata and credentials
        "100.100.100.200",  # Alibaba Cloud metadata
        "fd00:ec2::254",  # AWS instance metadata over IPv6
    )
)

_NAT64: Final = ipaddress.IPv6Network("64:ff9b::/96")


class DestinationRefusedError(AgentwatchError, OSError):
    """A webhook destination resolved only to addresses an endpoint without
    ``allow_private: true`` may not reach. Final: retrying cannot help. The message names
    the endpoint, the host, the addresses and why, and ``allow_private``."""


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address.sixtofour


def refusal_kind(address: IPAddress) -> str | None:
    """Why an endpoint without ``allow_private`` may not connect to ``address``
    (``"loopback"``, ``"private"``, ``"link-local"``, ``"metadata"``, ...), or None when
    it is a public address."""
    if isinstance(address, ipaddress.IPv6Address):
        inner = _embedded_ipv4(address)
        if inner is not None:
            kind = refusal_kind(inner)
            return None if kind is None else f"{kind}, inside {address}"
    if address in METADATA_ADDRESSES:
        return "metadata"
    for kind, flag in (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("private", address.is_private),
        ("reserved", address.is_reserved),
    ):
        if flag:
            return kind
    if not address.is_global:
        return "not global"
    return None


def system_resolver(host: str, port: int) -> list[str]:
    """The system's addresses for ``host`` (``getaddrinfo``), without duplicates."""
    out: list[str] = []
    for *_, sockaddr in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        address = str(sockaddr[0])
        if address not in out:
            out.append(address)
    return out


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class Destinations:
    """How one endpoint's connections pick their addresses."""

    endpoint: str
    allow_private: bool
    resolver: Resolver | None = None

    def addresses(self, host: str, port: int) -> list[IPAddress]:
        """The addresses of ``host`` this endpoint may connect to, in order; raises
        DestinationRefusedError when there is none (and OSError when the lookup fails)."""
        literal = _literal(host)
        if literal is not None:
            found = [literal]
        else:
            found = [
                ipaddress.ip_address(a) for a in (self.resolver or system_resolver)(host, port)
            ]
        if self.allow_private:
            return found
        permitted = [a for a in found if refusal_kind(a) is None]
        if permitted:
            return permitted
        if not found:
            raise OSError(f"{host} resolved to no address")
        if literal is not None:
            what = f"{literal} is a {refusal_kind(literal)} address"
        else:
            reasons = ", ".join(f"{a} ({refusal_kind(a)})" for a in found)
            what = f"{host} resolves only to refused addresses: {reasons}"
        raise DestinationRefusedError(
            f"destination refused: {what}; endpoint {self.endpoint!r} does not set "
            "`allow_private: true`"
        )

    def connect(
        self,
        address: tuple[str, int],
        timeout: float | None = None,
        source_address: tuple[str, int] | None = None,
    ) -> socket.socket:
        """``socket.create_connection`` on the permitted addresses only: the address
        checked is the address connected to."""
        host, port = address
        last_error = OSError(f"{host}: no address to connect to")
        for ip in self.addresses(host, port):
            try:
                return socket.create_connection((str(ip), port), timeout, source_address)
            except OSError as exc:
                last_error = exc
        raise last_error


def check_host(destinations: Destinations, host: str, port: int) -> None:
    """Refuse ``host`` when **any** of its addresses is refused (used when a proxy
    connects for us and may pick any of them); a failed lookup is left to the proxy."""
    if destinations.allow_private:
        return
    literal = _literal(host)
    try:
        found = (
            [literal]
            if literal is not None
            else [
                ipaddress.ip_address(a)
                for a in (destinations.resolver or system_resolver)(host, port)
            ]
        )
    except OSError:
        return
    refused = [a for a in found if refusal_kind(a) is not None]
    if refused:
        reasons = ", ".join(f"{a} ({refusal_kind(a)})" for a in refused)
        raise DestinationRefusedError(
            f"destination refused: {host} resolves to {reasons} (checked before the "
            f"proxy); endpoint {destinations.endpoint!r} does not set `allow_private: true`"
        )
