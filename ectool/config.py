"""Configuration resolution: flags > environment > config file > embedded defaults.

The resolved :class:`Config` records where each value came from, so ``ec config show``
can explain itself. URLs are validated here, so a typo fails with one clear line before
anything connects.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

from . import paths
from .errors import ConfigError

DB_SCHEMES = ("sqlite", "postgresql", "postgres")
BROKER_SCHEMES = ("sqlite", "amqp", "amqps")

#: keys in ec.toml, their environment variable and their default (a callable for paths)
KEYS: dict[str, tuple[str | None, object]] = {
    "db": ("EC_DB", lambda: f"sqlite:///{paths.data_dir() / 'ec.db'}"),
    "broker": ("EC_BROKER", lambda: f"sqlite:///{paths.data_dir() / 'queue.db'}"),
    "queue_type": ("EC_QUEUE_TYPE", "quorum"),
    "delivery_limit": ("EC_DELIVERY_LIMIT", 5),
    "max_message_bytes": ("EC_MAX_MESSAGE_BYTES", 16 * 1024 * 1024),
    "user": ("EC_USER", None),
    "namespace": ("EC_NAMESPACE", ""),
    "stats_retention": ("EC_STATS_RETENTION", "30d"),
    "ack_deadline": ("EC_ACK_DEADLINE", 900),
    "bundle": ("EC_BUNDLE", 16),
    "submit": ("EC_SUBMIT", "pipelined"),
}

#: duration units accepted by :func:`duration` (and ``--since``)
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}

TEMPLATE = """\
# ElasticCode configuration (ec.toml). Values here are overridden by the environment
# (EC_DB, EC_BROKER, ...) and by command-line flags (--db, --broker).

# The model store: sqlite:///path/to/ec.db or postgresql://user:password@host:5432/db
# db = "{db}"

# The transport: sqlite:///path/to/queue.db (embedded) or amqp://user:password@host:5672/%2F;
# the nodes of a RabbitMQ cluster as a list: amqp://user:password@h1:5672,h2:5672,h3:5672/%2F
# broker = "{broker}"

# RabbitMQ queue type for socket queues: "quorum" (default, replicated) or "classic".
# queue_type = "quorum"

# A delivery that kills its worker this many times is dead-lettered.
# delivery_limit = 5

# Largest encoded call message accepted, in bytes; bigger payloads are refused before sending.
# max_message_bytes = 16777216

# Prefix for broker queue names, so several networks can share one RabbitMQ vhost.
# namespace = ""

# How long per-minute call statistics (ec stats history) are kept: 90m, 12h, 30d, ...
# stats_retention = "{stats_retention}"

# Seconds a worker holds an unacknowledged RabbitMQ delivery before it hands the call off
# (a confirmed copy parked in the broker, the delivery acknowledged): keep it below
# RabbitMQ's consumer_timeout (30 minutes by default) so long calls keep their channel.
# ack_deadline = 900

# Calls per broker message at most when one submit sends many (ec map, Client.submit): a
# bundle pays the per-message cost once. A submit of n calls bundles n // 8 (so at least 8
# messages stay free to spread over workers), and a worker hands the rest of a bundle back
# as single messages once its calls turn out slow. 1 sends every call on its own.
# bundle = 16

# How the Python API's Socket(...)(...) submits: "pipelined" (default: the call returns its
# handle at once, a submitter thread commits and publishes calls in batches; durable once
# h.sent(), h.get(), ectool.api.flush(), leaving "with ectool.api.batch():" or exit has
# returned) or "sync" (each call durable before it returns).
# submit = "pipelined"
"""


@dataclass
class Config:
    db: str
    broker: str
    queue_type: str = "quorum"
    delivery_limit: int = 5
    max_message_bytes: int = 16 * 1024 * 1024
    user: str | None = None
    namespace: str = ""
    stats_retention: str = "30d"
    ack_deadline: int = 900
    bundle: int = 16
    submit: str = "pipelined"
    sources: dict[str, str] = field(default_factory=dict)
    config_file: str = ""

    def masked(self) -> dict[str, object]:
        """The resolved values with passwords in URLs replaced by ``***``."""
        values = asdict(self)
        values.pop("sources")
        for key in ("db", "broker"):
            values[key] = mask_url(values[key])
        return values


def mask_url(url: str) -> str:
    """Hide the password part of a URL (``amqp://u:***@h/``). Done on the text, not with
    urlsplit: a password with an unencoded ``/``, ``?`` or ``#`` would cut urlsplit's host
    part short and be shown whole. Everything between the user's ``:`` and the last ``@``
    is hidden (erring towards hiding too much of a URL with ``@`` in its query)."""
    head, sep, rest = url.partition("://")
    auth, at, host = rest.rpartition("@")
    if not sep or not at or ":" not in auth:
        return url
    return f"{head}{sep}{auth.split(':', 1)[0]}:***@{host}"


def _read_file(path) -> dict:
    if not path.exists():
        return {}
    import tomllib  # here: without a config file (the default) every command would pay for it

    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"malformed config file {path}: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"malformed config file {path}: not UTF-8 (byte {exc.start})") from None
    except RecursionError:
        raise ConfigError(f"malformed config file {path}: nested too deeply") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    unknown = sorted(set(data) - set(KEYS))
    if unknown:
        raise ConfigError(f"unknown key(s) in {path}: {', '.join(unknown)}")
    return data


def validate_url(key: str, url: str) -> str:
    """Check a store/broker URL's scheme and shape; return it unchanged."""
    allowed = DB_SCHEMES if key == "db" else BROKER_SCHEMES
    if not isinstance(url, str) or "://" not in url:
        raise ConfigError(f"bad {key} URL {url!r}: expected one of {', '.join(s + '://' for s in allowed)}")
    shown = mask_url(url)
    scheme = url.split("://", 1)[0].lower()
    if scheme not in allowed:
        raise ConfigError(f"bad {key} URL {shown!r}: scheme must be one of {', '.join(allowed)}")
    if scheme == "sqlite" and not url.split("://", 1)[1].lstrip("/"):
        raise ConfigError(f"bad {key} URL {shown!r}: sqlite URLs need a file path (sqlite:///path)")
    if scheme in ("amqp", "amqps"):  # one node or several (h1:p1,h2:p2): each host checked
        from .broker_hosts import split

        split(url, shown)
        return url
    try:
        urlsplit(url).port  # noqa: B018 - a bad IPv6 host or port raises here, not in the store
    except ValueError:  # (its message may quote part of the password)
        raise ConfigError(f"bad {key} URL {shown!r}: bad host or port") from None
    return url


def duration(text: object) -> float:
    """Seconds in ``30s``, ``10m``, ``2h``, ``1d`` or a plain number of seconds; ValueError
    if it is none of these."""
    text = str(text).strip()
    if not text:
        raise ValueError("empty duration")
    if text[-1] in UNITS:
        seconds = float(text[:-1]) * UNITS[text[-1]]
    else:
        seconds = float(text)
    if seconds != seconds or seconds in (float("inf"), float("-inf")):
        raise ValueError(f"not a finite duration: {text!r}")
    return seconds


def _coerce(key: str, value: Any, origin: str) -> Any:
    default = KEYS[key][1]
    if isinstance(default, int) and not isinstance(default, bool):
        try:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)  # true is not 1, nor 2.5 (or inf) 2
            number = int(value)
        except (TypeError, ValueError, OverflowError):
            raise ConfigError(f"{key} from {origin} must be an integer, got {value!r}") from None
        if key == "ack_deadline" and number < 1:
            raise ConfigError(f"ack_deadline from {origin} must be at least 1 second, got {value!r}")
        if key == "bundle" and not 1 <= number <= 1000:
            raise ConfigError(f"bundle from {origin} must be between 1 and 1000 calls, got {value!r}")
        return number
    if key == "namespace" and (not isinstance(value, str) or not all(c.isalnum() or c in "-_" for c in value)):
        raise ConfigError(f"namespace from {origin} may only hold letters, digits, '-' and '_', got {value!r}")
    if key == "submit" and value not in ("pipelined", "sync"):
        raise ConfigError(f"submit from {origin} must be 'pipelined' or 'sync', got {value!r}")
    if key == "queue_type" and value not in ("quorum", "classic"):
        raise ConfigError(f"queue_type from {origin} must be 'quorum' or 'classic', got {value!r}")
    if key == "stats_retention":
        try:
            seconds = duration(value)
        except ValueError:
            seconds = None
        if isinstance(value, bool) or seconds is None or seconds < 60:
            raise ConfigError(f"stats_retention from {origin} must be a duration of at least a minute "
                              f"(90m, 12h, 30d), got {value!r}")
        return str(value).strip()
    return value


def load(**flags: object) -> Config:
    """Resolve the configuration; ``flags`` are command-line values (None = not given)."""
    path = paths.config_file()
    file_values = _read_file(path)
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for key, (env, default) in KEYS.items():
        if flags.get(key) is not None:
            values[key], sources[key] = flags[key], "flag"
        elif env and os.environ.get(env):
            values[key], sources[key] = os.environ[env], f"env {env}"
        elif key in file_values:
            values[key], sources[key] = file_values[key], str(path)
        else:
            values[key] = default() if callable(default) else default
            sources[key] = "default"
        if values[key] is not None:
            values[key] = _coerce(key, values[key], sources[key])
    for key in ("db", "broker"):
        validate_url(key, values[key])
    return Config(**values, sources=sources, config_file=str(path))


def init_file(force: bool = False) -> str:
    """Write a commented config file with the current defaults; return its path."""
    path = paths.config_file()
    if path.exists() and not force:
        raise ConfigError(f"{path} exists; use --force to overwrite")
    path.parent.mkdir(parents=True, exist_ok=True)
    defaults = {k: (d() if callable(d) else d) for k, (_, d) in KEYS.items()}
    path.write_text(TEMPLATE.format(**defaults))
    return str(path)
