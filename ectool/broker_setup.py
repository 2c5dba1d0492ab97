"""A dedicated RabbitMQ virtual host and user for one ElasticCode network.

The broker URL names them: ``amqp://USER:PASSWORD@host:5672/VHOST`` (or ``amqps://``).
RabbitMQ has no AMQP operation that creates users or virtual hosts, so setting them up
means running ``rabbitmqctl`` on a broker node: :func:`setup` runs it here, and
:func:`script` writes the same steps as a POSIX shell script for an operator to run on a
remote broker. Both are idempotent (``add_vhost`` is; an existing user gets the URL's
password) and neither ever prints the password: ``rabbitmqctl`` reads it on stdin, and the
script takes it from ``$EC_BROKER_PASSWORD``.

The user's permissions in its vhost cover only what ElasticCode declares (see
:mod:`ectool.transport.amqp`): ``ec.…`` queues and exchanges (``ec.<namespace>.…``,
``ec.delay.ec.<namespace>.…`` and the shared ``ec.dead`` when a namespace is configured),
the server-named ``amq.gen-…`` inboxes and event subscriptions, and writes to the default
exchange (``amq.default``), through which calls, replies and delayed retries travel.

Everything here but :func:`run_rabbitmqctl` only builds commands.
"""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from .config import mask_url
from .errors import PermissionDenied, Unreachable, UsageError

#: the environment variable a printed script reads the password from
PASSWORD_ENV = "EC_BROKER_PASSWORD"
#: rabbitmqctl's exit codes (sysexits) that mean "cannot talk to the node" / "not allowed"
EX_UNAVAILABLE, EX_TEMPFAIL, EX_NOPERM = 69, 75, 77
TIMEOUT = 60.0  # seconds for one rabbitmqctl command


@dataclass(frozen=True)
class Account:
    """The vhost and user a broker URL names, and the network's queue namespace."""

    url: str
    user: str
    password: str
    vhost: str
    namespace: str = ""

    def __repr__(self) -> str:  # never show the password, even in a traceback
        return f"Account({mask_url(self.url)!r}, namespace={self.namespace!r})"


def account(url: str, namespace: str = "", *, password_needed: bool = True) -> Account:
    """The account in ``url``; :class:`UsageError` unless it names a dedicated user with a
    password that ``rabbitmqctl`` can set (or none, unless ``password_needed``: a printed
    script takes it from the environment)."""
    parts = urlsplit(url)
    shown = mask_url(url)
    if parts.scheme.lower() not in ("amqp", "amqps"):
        raise UsageError(f"broker setup needs an amqp:// or amqps:// broker URL, not {shown!r}")
    user = unquote(parts.username or "")
    password = unquote(parts.password or "")
    if not user or (parts.password is None and password_needed):
        raise UsageError(f"broker URL {shown!r} names no user and password "
                         "(amqp://USER:PASSWORD@host:5672/VHOST)")
    if user == "guest":
        raise UsageError("the broker URL uses RabbitMQ's default 'guest' user; put a dedicated "
                         "user in it (amqp://USER:PASSWORD@host:5672/VHOST)")
    if not password.strip() and password_needed:
        raise UsageError(f"broker URL {shown!r} has an empty password")
    if password != password.strip():
        raise UsageError("the password in the broker URL begins or ends with white space, "
                         "which rabbitmqctl drops; choose another")
    # pika's reading of the path: the first segment, unquoted ("%2F" is "/"); none is "/"
    segment = parts.path[1:].split("/", 1)[0] if len(parts.path) > 1 else ""
    vhost = unquote(segment) or "/"
    return Account(url=url, user=user, password=password, vhost=vhost, namespace=namespace)


def resources(namespace: str = "") -> list[str]:
    """Regular expressions (unanchored) for the queue and exchange names ec uses."""
    if namespace:  # letters, digits, '-' and '_' only (config validates it)
        own = [rf"ec\.{namespace}\..*", rf"ec\.delay\.ec\.{namespace}\..*", r"ec\.dead"]
    else:
        own = [r"ec\..*"]
    return own + [r"amq\.gen-.*"]


def permissions(namespace: str = "") -> tuple[str, str, str]:
    """``(configure, write, read)`` patterns for ``rabbitmqctl set_permissions``."""
    names = resources(namespace)
    own = "^(" + "|".join(names) + ")$"
    return own, "^(" + "|".join([*names, r"amq\.default"]) + ")$", own


@dataclass(frozen=True)
class Step:
    """One rabbitmqctl command; ``password`` = it reads the password on stdin."""

    args: tuple[str, ...]
    what: str
    password: bool = False
    #: stderr phrases meaning "already so": the step then counts as done
    fine_if: tuple[str, ...] = ()


def setup_steps(acct: Account) -> list[Step]:
    configure, write, read = permissions(acct.namespace)
    return [
        Step(("add_vhost", acct.vhost), f"vhost {acct.vhost!r}"),
        Step(("add_user", acct.user), f"user {acct.user!r}", password=True),
        Step(("set_permissions", "-p", acct.vhost, acct.user, configure, write, read),
             f"permissions of {acct.user!r} in {acct.vhost!r}"),
    ]


def teardown_steps(acct: Account) -> list[Step]:
    steps = [Step(("delete_user", acct.user), f"user {acct.user!r}", fine_if=("does not exist",))]
    if acct.vhost != "/":
        steps.append(Step(("delete_vhost", acct.vhost), f"vhost {acct.vhost!r}",
                          fine_if=("does not exist",)))
    return steps


# -- the script for an operator ----------------------------------------------------------


def script(acct: Account, rabbitmqctl: str = "rabbitmqctl", *, teardown: bool = False) -> str:
    """A POSIX shell script doing :func:`setup` (or :func:`teardown`) on a broker node."""
    ctl = rabbitmqctl

    def line(step: Step) -> str:
        return f"{ctl} {shlex.join(step.args)}"

    head = ["#!/bin/sh",
            f"# ElasticCode broker {'teardown' if teardown else 'setup'} for {mask_url(acct.url)}"
            + (f" (namespace {acct.namespace})" if acct.namespace else ""),
            "# Run it as root (or the rabbitmq user) on a node of that RabbitMQ cluster."]
    if teardown:
        body = [line(s) for s in teardown_steps(acct)]
        if acct.vhost == "/":
            body.append("# the vhost '/' is RabbitMQ's default: it is kept")
        return "\n".join(head + body) + "\n"
    add_vhost, add_user, grant = setup_steps(acct)
    feed = f"printf '%s\\n' \"${PASSWORD_ENV}\""
    body = [
        f"# The password is the one in the broker URL, read from ${PASSWORD_ENV}, e.g.",
        f"#   read -rs {PASSWORD_ENV}; export {PASSWORD_ENV}; sh THIS-SCRIPT",
        "set -eu",
        f': "${{{PASSWORD_ENV}:?set {PASSWORD_ENV} to the password in the broker URL}}"',
        line(add_vhost),
        f"if ! {feed} | {line(add_user)} 2>/dev/null; then",
        f"    {feed} | {ctl} change_password {shlex.quote(acct.user)}",
        "fi",
        line(grant),
    ]
    return "\n".join(head + body) + "\n"


# -- running rabbitmqctl here ------------------------------------------------------------


def _reason(output: str) -> str:
    """The one line of rabbitmqctl's output that says what went wrong."""
    lines = [raw.strip() for raw in output.splitlines()]
    lines = [s for s in lines if s and not s[:2].isdigit()]  # drop "12:14:16.303 [error] ..." logs
    for i, text in enumerate(lines):
        if text.startswith("Error:"):
            rest = text[len("Error:"):].strip()
            if rest:
                return rest.split(". Please see")[0][:200]
            return lines[i + 1][:200] if i + 1 < len(lines) else "failed"
    return lines[0][:200] if lines else "failed"


def run_rabbitmqctl(rabbitmqctl: str, step: Step, password: str | None = None) -> str:
    """Run one step; its stdout. One-line :class:`EcError` subclasses on failure:
    UsageError (exit 2) for a missing rabbitmqctl or a refused command, Unreachable (3)
    when it cannot reach the node, PermissionDenied (5) when it may not."""
    argv = [*shlex.split(rabbitmqctl), "-q", *step.args]
    stdin = f"{password}\n" if step.password else None
    try:
        done = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=TIMEOUT)
    except FileNotFoundError:
        raise UsageError(f"{argv[0]} not found: run this on a RabbitMQ node, pass --rabbitmqctl, "
                         "or use --print for the commands") from None
    except PermissionError:
        raise PermissionDenied(f"cannot run {argv[0]}: permission denied") from None
    except subprocess.TimeoutExpired:
        raise Unreachable(f"rabbitmqctl {step.args[0]} took longer than {TIMEOUT:.0f}s") from None
    if done.returncode == 0:
        return done.stdout
    reason = _reason(done.stderr + "\n" + done.stdout)
    message = f"rabbitmqctl {step.args[0]} failed for {step.what}: {reason}"
    if done.returncode in (EX_UNAVAILABLE, EX_TEMPFAIL):
        raise Unreachable(message)
    if done.returncode == EX_NOPERM or "should run rabbitmqctl" in reason:
        raise PermissionDenied(message + " (run as root, or --rabbitmqctl 'sudo rabbitmqctl')")
    raise UsageError(message)


def _attempt(rabbitmqctl: str, step: Step, password: str | None = None) -> bool:
    """Run ``step``; False when it failed in a way ``step.fine_if`` allows (already so)."""
    try:
        run_rabbitmqctl(rabbitmqctl, step, password)
        return True
    except UsageError as exc:
        if any(phrase in str(exc) for phrase in step.fine_if):
            return False
        raise


def setup(acct: Account, rabbitmqctl: str = "rabbitmqctl",
          report: Callable[[str], None] = lambda _line: None) -> None:
    """Create (or update) the vhost, the user with the URL's password, and its permissions."""
    add_vhost, add_user, grant = setup_steps(acct)
    run_rabbitmqctl(rabbitmqctl, add_vhost)
    report(f"vhost {acct.vhost}: ready")
    try:
        run_rabbitmqctl(rabbitmqctl, add_user, acct.password)
        report(f"user {acct.user}: created (password from the broker URL)")
    except UsageError as exc:
        if "already exists" not in str(exc):
            raise
        change = Step(("change_password", acct.user), add_user.what, password=True)
        run_rabbitmqctl(rabbitmqctl, change, acct.password)
        report(f"user {acct.user}: exists, password set to the broker URL's")
    run_rabbitmqctl(rabbitmqctl, grant)
    configure, write, read = grant.args[-3:]
    report(f"permissions of {acct.user} in {acct.vhost}: configure {configure} "
           f"write {write} read {read}")


def teardown(acct: Account, rabbitmqctl: str = "rabbitmqctl",
             report: Callable[[str], None] = lambda _line: None) -> None:
    """Delete the user and the vhost (with every queue in it); absent ones are fine."""
    for step in teardown_steps(acct):
        done = _attempt(rabbitmqctl, step)
        kind = "user" if step.args[0] == "delete_user" else "vhost"
        report(f"{kind} {step.args[1]}: {'deleted' if done else 'absent'}")
    if acct.vhost == "/":
        report("vhost /: kept (RabbitMQ's default)")


def check(acct: Account) -> None:
    """Connect with the broker URL (as the new user, to the vhost); Unreachable if not."""
    from .transport.amqp_connection import open_connection

    try:
        connection = open_connection(acct.url, "broker setup check", attempts=1)
    except Unreachable as exc:
        raise Unreachable(f"set up, but the broker URL does not connect: {exc}") from None
    connection.close()
