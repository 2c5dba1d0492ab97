"""RabbitMQ connections (pika), shared by the producer (:mod:`.amqp`) and the consumers
(:mod:`.amqp_consumer`): URLs and TLS, opening a connection to one node of several, the
dead-letter topology, delay queues, and one-line accounts of pika's errors.
"""

from __future__ import annotations

import logging
import math
import os
import random
import ssl
import urllib.parse
from typing import Any

from ..pika_lean import import_pika

pika = import_pika()
from pika import exceptions as px
from pika.adapters.blocking_connection import BlockingConnection
from pika.connection import URLParameters
from pika.spec import BasicProperties

from ..broker_hosts import rotate
from ..broker_hosts import split as split_hosts
from ..config import mask_url
from ..errors import EcError, Unreachable, UsageError
from .base import DEAD_QUEUE, DeadLetter

#: one logger for the RabbitMQ transport's connections, as before the split
log = logging.getLogger("ectool.transport.amqp")
if logging.getLogger("pika").level == logging.NOTSET:
    # pika logs every failed connection attempt as an ERROR with a traceback; this module
    # reports the same failures as one-line EcErrors (and reconnects as warnings).
    logging.getLogger("pika").setLevel(logging.CRITICAL)

HEARTBEAT = 30  # seconds
DELAY_EXPIRY_MS = 60_000  # an unused delay queue vanishes this long after its delay
DELAY_ALTERNATES = 4  # other names a delay queue may take while its node is down
NOT_FOUND, PRECONDITION_FAILED = 404, 406

# Errors meaning "the connection (or a channel with it) is gone": reconnect and retry.
LOST = (px.AMQPConnectionError, px.ChannelWrongStateError, px.StreamLostError)

DEATH_REASONS = {
    "delivery_limit": "delivery limit exceeded",
    "rejected": "rejected",
    "expired": "expired",
    "maxlen": "queue full",
}


def redact(url: str) -> str:
    """``url`` without its password (:func:`ectool.config.mask_url`: on the text, so a
    list of hosts or an odd password is masked as ``ec config show`` masks it)."""
    return mask_url(url)


def describe(error: BaseException) -> str:
    """A one-line account of a pika error."""
    if isinstance(error, px.ProbableAuthenticationError | px.AuthenticationError):
        return "authentication failed (check the user and password)"
    if isinstance(error, px.ProbableAccessDeniedError):
        return "access denied (check the virtual host and permissions)"
    if isinstance(error, px.ConnectionClosed | px.ChannelClosed):
        return f"{error.reply_code} {error.reply_text}"
    # unwrap AMQPConnectionError(AMQPConnectorSocketConnectError(ConnectionRefusedError))
    for _ in range(5):
        inner = getattr(error, "exception", None)
        if inner is None and error.args and isinstance(error.args[0], BaseException):
            inner = error.args[0]
        if not isinstance(inner, BaseException):
            break
        error = inner
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    text = " ".join(str(error).split()) or type(error).__name__
    return text[:200]


#: query parameters of an ``amqps://`` URL that ectool reads itself (pika's own form,
#: ``ssl_options={'ca_certs': ...}``, is a URL-encoded Python dict and keeps working)
TLS_QUERY = ("cafile", "certfile", "keyfile", "server_name")


def connection_parameters(url: str) -> URLParameters:
    """pika's parameters for ``url``: ``amqp://`` or ``amqps://USER:PASS@HOST:PORT/VHOST``.

    An ``amqps://`` URL verifies the broker's certificate against the system's CAs and its
    host name, or against ``?cafile=PEM``; ``certfile=PEM&keyfile=PEM`` present a client
    certificate; ``server_name=NAME`` checks (and sends as SNI) another name than the
    URL's host. :class:`UsageError` for a malformed URL or unreadable certificate files.
    """
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    tls = {k: v for k, v in query if k in TLS_QUERY}
    rest = [(k, v) for k, v in query if k not in TLS_QUERY]
    if tls and parts.scheme.lower() != "amqps":
        raise UsageError(f"broker URL {redact(url)!r}: {', '.join(sorted(tls))} "
                         "only apply to amqps:// URLs")
    if tls and any(k == "ssl_options" for k, _ in rest):
        raise UsageError(f"broker URL {redact(url)!r}: use either ssl_options or "
                         f"{'/'.join(TLS_QUERY)}, not both")
    if "keyfile" in tls and "certfile" not in tls:
        raise UsageError(f"broker URL {redact(url)!r}: keyfile needs a certfile")
    plain = urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(rest)))
    try:
        params = pika.URLParameters(plain)
    except Exception as exc:  # pika raises plain ValueError/TypeError/OSError for bad URLs
        raise UsageError(f"malformed broker URL {redact(url)!r}: {describe(exc)}") from None
    if tls:
        params.ssl_options = pika.SSLOptions(_tls_context(url, tls),
                                             server_hostname=tls.get("server_name") or None)
    return params


def _tls_context(url: str, tls: dict[str, str]) -> ssl.SSLContext:
    """A client context that verifies the broker (hostname and chain) as ``tls`` says."""
    cafile, certfile, keyfile = (tls.get(k) or None for k in ("cafile", "certfile", "keyfile"))
    what = f"cafile {cafile}"
    try:
        context = ssl.create_default_context(cafile=cafile)
        if certfile:
            what = f"certfile {certfile}" + (f" / keyfile {keyfile}" if keyfile else "")
            context.load_cert_chain(certfile, keyfile)
    except (OSError, ssl.SSLError) as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise UsageError(f"broker URL {redact(url)!r}: cannot load {what}: {reason}") from None
    return context


#: per broker URL, the index (in its host list) of the node this process last reached:
#: the next connection tries that node first (at first a random one, to spread processes)
_preferred: dict[str, int] = {}


def open_connection(url: str, purpose: str, *, heartbeat: int = HEARTBEAT,
                    attempts: int = 2) -> BlockingConnection:
    """A new blocking connection to ``url``; :class:`Unreachable` if there is none.

    A URL naming several nodes (``h1:p1,h2:p2,...``, see :mod:`ectool.broker_hosts`) is
    tried node by node, from the one this process last reached, each once: an unreachable
    node is skipped with a warning, and Unreachable names how many were tried."""
    hosts = split_hosts(url)
    urls = hosts.urls()
    if len(urls) == 1:
        return _connect_one(url, purpose, heartbeat, attempts)
    start = _preferred.setdefault(url, random.randrange(len(urls)))
    failures = []
    for offset, one in enumerate(rotate(urls, start)):
        index = (start + offset) % len(urls)
        try:
            conn = _connect_one(one, purpose, heartbeat, 1)
        except _NodeUnreachable as exc:
            failures.append(f"{hosts.hosts[index]}: {exc.reason}")
            continue
        if failures:
            log.warning("RabbitMQ node%s unreachable (%s); %s connected to %s",
                        "s" if len(failures) > 1 else "", "; ".join(failures), purpose, hosts.hosts[index])
        _preferred[url] = index
        return conn
    raise Unreachable(f"cannot reach RabbitMQ: none of the {len(urls)} nodes of {redact(url)} "
                      f"answered ({'; '.join(failures)})")


class _NodeUnreachable(Unreachable):
    def __init__(self, url: str, reason: str):
        super().__init__(f"cannot reach RabbitMQ at {redact(url)}: {reason}")
        self.reason = reason


def _connect_one(url: str, purpose: str, heartbeat: int, attempts: int) -> BlockingConnection:
    params = connection_parameters(url)
    given = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
    defaults = {"heartbeat": heartbeat, "connection_attempts": attempts, "retry_delay": 0.5,
                "socket_timeout": 5, "stack_timeout": 10, "blocked_connection_timeout": 60}
    for name, value in defaults.items():
        if name not in given:
            setattr(params, name, value)
    if heartbeat == 0:
        params.tcp_options = {"TCP_KEEPIDLE": 60, "TCP_KEEPINTVL": 10, "TCP_KEEPCNT": 3}
    params.client_properties = {"connection_name": f"ectool {purpose} pid={os.getpid()}"}
    try:
        return BlockingConnection(params)
    except (px.AMQPError, OSError) as exc:
        raise _NodeUnreachable(url, describe(exc)) from None


def declare_dead_topology(connection: BlockingConnection) -> None:
    """The ``ec.dead`` fanout exchange and queue (idempotent; on channels of their own).

    A new ``ec.dead`` is a quorum queue, replicated like the work queues, so a cluster that
    loses a node still takes dead letters; one that exists is used as it is (an older
    classic one included). A classic ``ec.dead`` whose node is down is skipped with a
    warning: consuming and publishing go on, only dead-lettering waits for that node."""
    channel = connection.channel()
    try:
        channel.exchange_declare(DEAD_QUEUE, exchange_type="fanout", durable=True)
        channel.queue_declare(DEAD_QUEUE, passive=True)
        channel.queue_bind(DEAD_QUEUE, DEAD_QUEUE)
        return
    except px.ChannelClosedByBroker as exc:
        if exc.reply_code != NOT_FOUND:
            raise EcError(f"cannot declare {DEAD_QUEUE}: {describe(exc)}") from None
        if "home node" in (exc.reply_text or ""):
            log.warning("%s is on a RabbitMQ node that is down (%s); going on without it",
                        DEAD_QUEUE, exc.reply_text)
            return
    finally:
        if channel.is_open:
            channel.close()
    channel = connection.channel()  # the passive declare's 404 closed the first one
    try:
        channel.queue_declare(DEAD_QUEUE, durable=True, arguments={"x-queue-type": "quorum"})
        channel.queue_bind(DEAD_QUEUE, DEAD_QUEUE)
    except px.ChannelClosedByBroker as exc:
        if exc.reply_code != PRECONDITION_FAILED:
            raise EcError(f"cannot declare {DEAD_QUEUE}: {describe(exc)}") from None
        log.warning("%s exists with other settings (%s); using it as it is",
                    DEAD_QUEUE, exc.reply_text)
    finally:
        if channel.is_open:
            channel.close()


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def dead_letter_from(properties: BasicProperties, body: bytes) -> DeadLetter:
    """Where a message in ``ec.dead`` came from and why: our own headers if we moved it
    there, else the most recent ``x-death`` entry RabbitMQ added (a delayed message's
    first death is its delay queue, so ``x-first-death-*`` is only the last resort)."""
    headers = dict(properties.headers or {})
    deaths = headers.get("x-death") or [{}]
    last = deaths[0] if isinstance(deaths[0], dict) else {}
    queue = (headers.get("x-ec-queue") or last.get("queue")
             or headers.get("x-first-death-queue") or "")
    reason = headers.get("x-ec-reason")
    if reason is None:
        raw = _text(last.get("reason") or headers.get("x-first-death-reason") or "unknown")
        reason = DEATH_REASONS.get(raw, raw)
    return DeadLetter(body=body, queue=_text(queue), reason=_text(reason), headers=headers)


def quantize_ms(delay: float) -> int:
    """``delay`` seconds as milliseconds, rounded up to two significant digits."""
    ms = max(1, math.ceil(delay * 1000))
    step = 10 ** max(0, len(str(ms)) - 2)
    return -(-ms // step) * step


def delay_queue_name(queue: str, ms: int) -> str:
    return f"ec.delay.{queue}.{ms}"


def delay_queue(queue: str, delay: float) -> tuple[str, dict[str, Any]]:
    """The name and arguments of the delay queue feeding ``queue`` after ``delay`` seconds."""
    ms = quantize_ms(delay)
    return delay_queue_name(queue, ms), {"x-message-ttl": ms, "x-expires": ms + DELAY_EXPIRY_MS,
                                         "x-dead-letter-exchange": "", "x-dead-letter-routing-key": queue}
