"""Client addresses (docs/security.md §33): parsed before anything stores or counts them, and a
forwarded one believed only when the connection comes from a configured proxy."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network

Address = IPv4Address | IPv6Address
Networks = tuple[IPv4Network | IPv6Network, ...]

# The longest text an address is written as ("[v6 with an IPv4 tail]:port" is 53): anything
# longer is not one, and is refused before it is parsed.
MAX_TEXT = 64
# IPv6 hands a home or an office a /64 (and a host any number of addresses in it): limits
# count the network, or one client could take a fresh address for every try.
IPV6_LIMIT_PREFIX = 64
UNKNOWN = "unknown"


def parse_address(text: str | None) -> Address | None:
    """The address in `text` (also as `v4:port` or `[v6]:port`, as some proxies write it),
    or None when it is not exactly one."""
    if not text or len(text) > MAX_TEXT:
        return None
    text = text.strip()
    port: str | None = None
    if text.startswith("["):
        text, bracket, after = text[1:].partition("]")
        if not bracket or (after and not after.startswith(":")):
            return None
        port = after[1:] if after else None
    elif text.count(":") == 1:
        text, _, port = text.partition(":")
    if port is not None and not (port.isascii() and port.isdigit()):
        return None
    if "%" in text:  # a zone id names an interface of the sender's host: never ours
        return None
    try:
        address = ip_address(text)
    except ValueError:
        return None
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def canonical(text: str | None) -> str | None:
    """The address as stored (audit, sessions): its canonical text, or None."""
    address = parse_address(text)
    return None if address is None else str(address)


def rate_key(text: str | None) -> str:
    """What per-address limits count: the IPv4 address, the IPv6 /64, or "unknown"."""
    address = parse_address(text)
    if address is None:
        return UNKNOWN
    if isinstance(address, IPv6Address):
        return str(ip_network((address, IPV6_LIMIT_PREFIX), strict=False))
    return str(address)


def parse_networks(values: Iterable[str]) -> Networks:
    networks = []
    for value in values:
        try:
            networks.append(ip_network(value.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{value!r} is not an IP address or CIDR range") from None
    return tuple(networks)


def _trusted(address: Address, proxies: Networks) -> bool:
    return any(address in network for network in proxies)


def client_address(peer: str | None, forwarded_for: Sequence[str], proxies: Networks) -> Address | None:
    """Who the request is from. The connection's own peer, unless that is one of `proxies`:
    then the right-most X-Forwarded-For address that is not a proxy (each proxy appends the
    address it saw; everything left of the first stranger is the stranger's to write). A
    proxy passing on something that is no address leaves the client unknown."""
    address = parse_address(peer)
    if address is None or not _trusted(address, proxies):
        return address
    hops = [hop.strip() for value in forwarded_for for hop in value.split(",")]
    for hop in reversed([hop for hop in hops if hop]):
        address = parse_address(hop)
        if address is None or not _trusted(address, proxies):
            return address
    return address  # every hop is a proxy of ours: the first of them
