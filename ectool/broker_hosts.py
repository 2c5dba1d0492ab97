"""Several RabbitMQ nodes in one broker URL, and the order they are tried in (pure).

A broker URL may name the nodes of a RabbitMQ cluster as a comma-separated ``host:port``
list: ``amqp://USER:PASS@h1:5672,h2:5672,h3/VHOST?QUERY`` (a host without a port gets the
scheme's default: 5672, 5671 for ``amqps``). Everything but the host is shared. Each
connection ec opens tries the nodes in turn, starting from the one its process last
reached (at first a random one, so that clients and workers spread over the cluster), and
moves to the next when a node is unreachable or goes away.

The same convention as :func:`ectool.config.mask_url` splits a URL: the credentials end at
its last ``@``, the host list at the first ``/``, ``?`` or ``#`` after that.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from .errors import ConfigError

DEFAULT_PORTS = {"amqp": 5672, "amqps": 5671}


@dataclass(frozen=True)
class Hosts:
    """A broker URL taken apart: ``head`` is ``scheme://`` and the credentials with their
    ``@``, ``hosts`` the ``host:port`` list (ports made explicit), ``tail`` the rest."""

    head: str
    hosts: tuple[str, ...]
    tail: str

    def urls(self) -> list[str]:
        """One single-node URL per host, in the URL's order."""
        return [f"{self.head}{host}{self.tail}" for host in self.hosts]


def split(url: str, shown: str | None = None) -> Hosts:
    """Take ``url`` apart (see the module doc); :class:`ConfigError` for an empty host or a
    malformed host or port in the list. ``shown`` is how errors quote the URL (masked)."""
    shown = url if shown is None else shown
    scheme, sep, rest = url.partition("://")
    auth, at, where = rest.rpartition("@")
    cut = min((i for i in (where.find(c) for c in "/?#") if i >= 0), default=len(where))
    netloc, tail = where[:cut], where[cut:]
    default = DEFAULT_PORTS.get(scheme.lower(), 5672)
    hosts = []
    for n, item in enumerate(netloc.split(","), 1):
        host = item.strip()
        where_ = f"host {n} of {len(netloc.split(','))}" if "," in netloc else "the host"
        if not host:
            raise ConfigError(f"bad broker URL {shown!r}: {where_} is empty")
        try:
            parts = urlsplit(f"{scheme}://{host}")
            port = parts.port
        except ValueError:
            raise ConfigError(f"bad broker URL {shown!r}: {where_} ({host!r}) has a bad host or port") from None
        if not parts.hostname or parts.username is not None or parts.path or any(c.isspace() for c in host):
            raise ConfigError(f"bad broker URL {shown!r}: {where_} ({host!r}) is not HOST or HOST:PORT")
        if port is None:
            host = f"{host}:{default}"
        hosts.append(host)
    return Hosts(f"{scheme}{sep}{auth}{at}", tuple(hosts), tail)


def rotate(urls: list[str], start: int) -> list[str]:
    """``urls`` starting at index ``start`` (modulo their number), then wrapping around:
    the order a connection tries the nodes in."""
    if not urls:
        return []
    start %= len(urls)
    return urls[start:] + urls[:start]


def describe_hosts(hosts: Hosts) -> str:
    """``3 nodes (h1:5672, h2:5672, h3:5672)`` or ``h1:5672``: for error messages."""
    if len(hosts.hosts) == 1:
        return hosts.hosts[0]
    return f"{len(hosts.hosts)} nodes ({', '.join(hosts.hosts)})"
