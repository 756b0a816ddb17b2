"""The client's address, trusting ``X-Forwarded-For`` only from configured proxies.

Rate limits key on this, so a client must not be able to pick its own address
by sending the header directly.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from functools import lru_cache

from quartstack.web.context import current_quart, current_request
from quartstack.web.headers import optional_header

TRUSTED_PROXIES_KEY = "QUARTSTACK_TRUSTED_PROXIES"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(entries: Iterable[str]) -> tuple[Network, ...]:
    """The trusted proxies as networks (entries were checked by the settings)."""
    return tuple(ipaddress.ip_network(entry, strict=False) for entry in entries)


def is_trusted(address: str, networks: tuple[Network, ...]) -> bool:
    """True if ``address`` is an IP address inside one of ``networks``."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def resolve_client_address(
    peer: str, forwarded_for: str | None, networks: tuple[Network, ...]
) -> str:
    """Walk ``X-Forwarded-For`` from the right, skipping trusted proxies.

    The first address that is not a trusted proxy is the client; if the peer
    itself is not trusted, the header is ignored entirely.
    """
    if not forwarded_for or not networks or not is_trusted(peer, networks):
        return peer
    hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not is_trusted(hop, networks):
            return hop
    return hops[0] if hops else peer


def client_address() -> str:
    peer = current_request().remote_addr or "unknown"
    networks: tuple[Network, ...] = current_quart().config.get(TRUSTED_PROXIES_KEY, ())
    if not networks:  # the common case: no proxy is trusted, the header is never read
        return peer
    return resolve_client_address(peer, optional_header("X-Forwarded-For"), networks)


#: Prefix lengths kept by :func:`truncated_address`: a household or a small office, not a
#: person (the usual anonymisation of web analytics).
IPV4_PREFIX = 24
IPV6_PREFIX = 48


@lru_cache(maxsize=4096)
def truncated_address(address: str) -> str:
    """``203.0.113.7`` -> ``203.0.113.0/24``, ``2001:db8:abcd:12::1`` -> ``2001:db8:abcd::/48``;
    something that is not an IP address (``unknown``) is returned as is."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    prefix = IPV4_PREFIX if ip.version == 4 else IPV6_PREFIX
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))
