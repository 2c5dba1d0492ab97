"""A network's own RabbitMQ vhost and user (`ec broker setup|teardown`, `ec db init
--broker-setup`) and TLS broker URLs (`amqps://...?cafile=...`).

The real tests create a randomly named vhost and user with the command, run calls through
a worker as that user, and always delete both afterwards (rabbitmqctl, in a finalizer). The
TLS tests start a throwaway TLS listener on the running RabbitMQ at runtime
(``rabbit_networking:start_ssl_listener``) with a CA and certificates made by openssl in a
temporary directory, and always stop it afterwards; the broker's configuration is untouched.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import ssl
import stat
import subprocess
import tempfile
import uuid
from pathlib import Path
from urllib.parse import quote

import pytest
from conftest import REQUIRE, need_service

from ectool import broker_setup
from ectool.errors import PermissionDenied, Unreachable, UsageError
from ectool.transport.amqp_connection import connection_parameters
from helpers import ec, env_for, sample_network, workers

PASSWORD = "pw$ secret/ä%"  # awkward on purpose: '$', space, '/', non-ASCII, '%'

# ---------------------------------------------------------------- pure: accounts, permissions


def test_account_reads_user_password_and_vhost():
    acct = broker_setup.account(f"amqps://ec:{quote(PASSWORD, safe='')}@mq:5671/ec-prod?cafile=/x", "prod")
    assert (acct.user, acct.password, acct.vhost, acct.namespace) == ("ec", PASSWORD, "ec-prod", "prod")
    assert broker_setup.account("amqp://ec:p@mq/%2F").vhost == "/"
    assert broker_setup.account("amqp://ec:p@mq").vhost == "/"
    assert broker_setup.account("amqp://ec:p@mq/a%2Fb").vhost == "a/b"
    assert PASSWORD not in repr(acct)


@pytest.mark.parametrize("url, reason", [
    ("sqlite:///tmp/q.db", "needs an amqp:// or amqps://"),
    ("amqp://mq/v", "names no user and password"),
    ("amqp://ec@mq/v", "names no user and password"),
    ("amqp://guest:guest@mq/v", "'guest' user"),
    ("amqp://ec:@mq/v", "empty password"),
    ("amqp://ec:%20pw@mq/v", "white space"),
])
def test_account_refuses_unusable_urls(url, reason):
    with pytest.raises(UsageError, match=re.escape(reason)):
        broker_setup.account(url)


OURS = ["ec.{ns}.s.echo", "ec.{ns}.agent.host1", "ec.{ns}.events", "ec.delay.ec.{ns}.s.flaky.50",
        "ec.dead", "amq.gen-JzTY20BRgKO-HjmUJj0wLg"]
THEIRS = ["other", "ec.{other}.s.echo", "ec.delay.ec.{other}.s.echo.50", "amq.direct", "amq.rabbitmq.trace",
          "xec.{ns}.s.echo"]


@pytest.mark.parametrize("namespace", ["", "prod-1"])
def test_permissions_cover_exactly_our_names(namespace):
    configure, write, read = broker_setup.permissions(namespace)
    assert configure == read and write != configure
    ns = namespace or "any"
    for name in OURS:
        name = name.format(ns=ns)
        assert all(re.fullmatch(p, name) for p in (configure, write, read)), name
    for name in THEIRS:
        name = name.format(ns=ns, other="other")
        if not namespace and name.startswith("ec."):
            continue  # without a namespace every ec.* name is the network's own
        assert not any(re.fullmatch(p, name) for p in (configure, write, read)), name
    assert re.fullmatch(write, "amq.default") and not re.fullmatch(configure, "amq.default")


def test_printed_script_reads_the_password_from_the_environment(tmp_path):
    acct = broker_setup.account(f"amqp://ec:{quote(PASSWORD, safe='')}@mq/ec-prod", "prod")
    text = broker_setup.script(acct)
    assert PASSWORD not in text and quote(PASSWORD, safe="") not in text
    assert "amqp://ec:***@mq/ec-prod" in text and '"$EC_BROKER_PASSWORD"' in text
    assert "rabbitmqctl add_vhost ec-prod" in text and "rabbitmqctl set_permissions -p ec-prod ec" in text
    # run it against a fake rabbitmqctl that records what it got: the password on stdin only
    fake = fake_rabbitmqctl(tmp_path)
    script = tmp_path / "setup.sh"
    script.write_text(broker_setup.script(acct, str(fake)))
    env = dict(os.environ, EC_BROKER_PASSWORD=PASSWORD, FAKE_DIR=str(tmp_path))
    for _ in (1, 2):  # twice: the second run finds the user and changes its password
        done = subprocess.run(["sh", str(script)], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    log = (tmp_path / "calls").read_text()
    assert PASSWORD not in "".join(line for line in log.splitlines() if line.startswith("argv"))
    assert log.count(f"stdin {PASSWORD}") == 3  # add_user, add_user (exists), change_password
    assert "argv -q" not in log and "argv change_password ec" in log
    unset = subprocess.run(["sh", str(script)], env=dict(env, EC_BROKER_PASSWORD=""), capture_output=True,
                           text=True)
    assert unset.returncode != 0 and "set EC_BROKER_PASSWORD" in unset.stderr


def test_print_needs_no_password_in_the_url():
    env = env_for("sqlite:///unused.db", "amqp://ec@mq.example.com/ec-prod")
    done = ec("broker", "setup", "--print", "--rabbitmqctl", "sudo rabbitmqctl", env=env)
    assert done.returncode == 0 and "sudo rabbitmqctl add_vhost ec-prod" in done.stdout, done.stderr
    assert "# ElasticCode broker setup for amqp://ec@mq.example.com/ec-prod" in done.stdout
    assert ec("broker", "setup", env=env).returncode == 2  # running it here does need it


def test_teardown_script_keeps_the_default_vhost():
    text = broker_setup.script(broker_setup.account("amqp://ec:p@mq/%2F"), teardown=True)
    assert "delete_user ec" in text and "delete_vhost" not in text


def fake_rabbitmqctl(tmp_path: Path, exit_code: int = 0, stderr: str = "") -> Path:
    """A stand-in rabbitmqctl: logs argv and stdin to $FAKE_DIR/calls; add_user fails the second
    time like the real one; or it always fails with ``exit_code`` and ``stderr``."""
    fake = tmp_path / "rabbitmqctl"
    if exit_code:
        fake.write_text(f"#!/bin/sh\ncat >&2 <<'EOF'\n{stderr}\nEOF\nexit {exit_code}\n")
    else:
        fake.write_text("""#!/bin/sh
d=${FAKE_DIR:?}
echo "argv $*" >> "$d/calls"
case "$*" in *add_user*|*change_password*)
    IFS= read -r pw; echo "stdin $pw" >> "$d/calls";;
esac
case "$*" in *add_user*)
    if [ -e "$d/user" ]; then printf 'Error:\\nUser "x" already exists\\n' >&2; exit 70; fi
    touch "$d/user";;
esac
""")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    return fake


def test_setup_is_idempotent_and_passes_the_password_on_stdin(tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_DIR", str(tmp_path))
    fake = fake_rabbitmqctl(tmp_path)
    acct = broker_setup.account(f"amqp://ec:{quote(PASSWORD, safe='')}@mq/v", "ns1")
    said: list[str] = []
    broker_setup.setup(acct, str(fake), report=said.append)
    broker_setup.setup(acct, str(fake), report=said.append)
    log = (tmp_path / "calls").read_text()
    assert "argv -q add_vhost v" in log and "argv -q change_password ec" in log
    assert "argv -q set_permissions -p v ec ^(ec\\.ns1\\..*|" in log
    assert all(PASSWORD not in line for line in log.splitlines() if line.startswith("argv"))
    assert any("created" in s for s in said) and any("exists" in s for s in said)
    assert all(PASSWORD not in s for s in said)


@pytest.mark.parametrize("code, stderr, error, exit_code", [
    (69, "Error: unable to perform an operation on node 'rabbit@mq'. Please see diagnostics information",
     Unreachable, 3),
    (1, "\nOnly root or rabbitmq should run rabbitmqctl\n", PermissionDenied, 5),
    (77, "Error:\nAccess refused", PermissionDenied, 5),
    (70, "12:00:00.000 [error] noise\nError:\nsomething odd", UsageError, 2),
])
def test_rabbitmqctl_failures_are_one_line_errors(tmp_path, code, stderr, error, exit_code):
    fake = fake_rabbitmqctl(tmp_path, code, stderr)
    acct = broker_setup.account("amqp://ec:secret@mq/v")
    with pytest.raises(error) as caught:
        broker_setup.setup(acct, str(fake))
    assert caught.value.exit_code == exit_code and "\n" not in str(caught.value)
    assert str(caught.value).startswith("rabbitmqctl add_vhost failed for vhost 'v': ")
    assert "noise" not in str(caught.value) and "Please see" not in str(caught.value)
    env = env_for("sqlite:///unused.db", "amqp://ec:secret@mq/v")
    done = ec("broker", "setup", "--rabbitmqctl", str(fake), env=env)
    assert done.returncode == exit_code and len(done.stderr.splitlines()) == 1, done.stderr
    assert "Traceback" not in done.stderr and "secret" not in done.stderr


def test_missing_rabbitmqctl_is_a_usage_error(tmp_path):
    env = env_for("sqlite:///unused.db", "amqp://ec:secret@mq/v")
    done = ec("broker", "setup", "--rabbitmqctl", str(tmp_path / "nope"), env=env)
    assert done.returncode == 2 and "not found" in done.stderr and "--print" in done.stderr
    assert len(done.stderr.splitlines()) == 1
    assert ec("broker", "teardown", env=env).returncode == 2  # needs --yes


# ---------------------------------------------------------------- pure: amqps:// parameters


@pytest.fixture(scope="module")
def certs():
    """A throwaway CA, a server certificate for localhost/127.0.0.1 and a client certificate
    signed by it, and an unrelated CA; in a directory the rabbitmq user can read."""
    if shutil.which("openssl") is None:
        pytest.skip("SKIPPED: openssl is not installed")
    directory = Path(tempfile.mkdtemp(prefix="ec-tls-"))
    try:
        directory.chmod(0o755)
        make_certs(directory)
        for f in directory.iterdir():
            f.chmod(0o644)  # throwaway keys: the broker runs as another user
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def make_certs(d: Path) -> None:
    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    for ca in ("ca", "other-ca"):
        openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{ca}.key", "-out", f"{ca}.pem",
                "-days", "2", "-subj", f"/CN=ElasticCode test {ca}")
    (d / "server.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    (d / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for name, cn in (("server", "localhost"), ("client", "ec-client")):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                "-subj", f"/CN={cn}")
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext")


def test_amqps_url_carries_a_verifying_ssl_context(certs):
    url = (f"amqps://ec:{quote(PASSWORD, safe='')}@127.0.0.1:5999/v?cafile={certs}/ca.pem"
           f"&certfile={certs}/client.pem&keyfile={certs}/client.key&server_name=localhost&heartbeat=7")
    params = connection_parameters(url)
    context = params.ssl_options.context
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert [c["subject"] for c in context.get_ca_certs()] == [((("commonName", "ElasticCode test ca"),),)]
    assert params.ssl_options.server_hostname == "localhost"
    assert (params.port, params.heartbeat, params.virtual_host) == (5999, 7, "v")
    assert params.credentials.password == PASSWORD
    # no query: pika's default, verifying against the system's CAs and the URL's host name
    plain = connection_parameters("amqps://ec:p@mq.example.com/v")
    assert plain.port == 5671 and plain.ssl_options.context.verify_mode == ssl.CERT_REQUIRED
    assert connection_parameters("amqp://ec:p@mq/v").ssl_options is None


@pytest.mark.parametrize("query, reason", [
    ("cafile={d}/missing.pem", "cannot load cafile {d}/missing.pem: No such file"),
    ("certfile={d}/ca.key", "cannot load certfile"),
    ("keyfile={d}/client.key", "keyfile needs a certfile"),
    ("cafile={d}/ca.pem&ssl_options={{}}", "either ssl_options or"),
    ("bogus=1", "Unknown URL parameter"),
])
def test_bad_tls_options_are_usage_errors(certs, query, reason):
    url = f"amqps://ec:secret@127.0.0.1/v?{query.format(d=certs)}"
    with pytest.raises(UsageError, match=re.escape(reason.format(d=certs))) as caught:
        connection_parameters(url)
    assert "secret" not in str(caught.value) and "ec:***@" in str(caught.value)
    with pytest.raises(UsageError, match="only apply to amqps://"):
        connection_parameters(f"amqp://ec:secret@127.0.0.1/v?cafile={certs}/ca.pem")


def test_config_show_masks_an_amqps_password(certs):
    url = f"amqps://ec:{quote(PASSWORD, safe='')}@127.0.0.1/v?cafile={certs}/ca.pem"
    done = ec("config", "show", "--json", env=env_for("sqlite:///unused.db", url))
    assert done.returncode == 0 and f"amqps://ec:***@127.0.0.1/v?cafile={certs}/ca.pem" in done.stdout
    assert quote(PASSWORD, safe="") not in done.stdout


# ---------------------------------------------------------------- real RabbitMQ


def rabbitmqctl(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=60, check=check)


@pytest.fixture
def ctl(amqp_url) -> None:
    """rabbitmqctl works here (root on the broker's host), else skip loudly (or fail under
    EC_REQUIRE_SERVICES=1)."""
    problem = None
    if shutil.which("rabbitmqctl") is None:
        problem = "rabbitmqctl is not on PATH"
    elif rabbitmqctl("list_vhosts", check=False).returncode != 0:
        problem = "rabbitmqctl cannot manage the local node (run the tests as root)"
    if problem:
        if REQUIRE:
            pytest.fail(f"EC_REQUIRE_SERVICES=1 but {problem}")
        pytest.skip(f"SKIPPED, SERVICE DOWN: {problem}")


@pytest.fixture
def account(ctl, request):
    """A random vhost and user name, with a broker URL for them; both are deleted afterwards
    whatever happened (directly with rabbitmqctl, not with the command under test)."""
    tag = uuid.uuid4().hex[:8]
    user, vhost = f"ec-test-user-{tag}", f"ec-test-vhost-{tag}"
    request.addfinalizer(lambda: rabbitmqctl("delete_vhost", vhost, check=False))
    request.addfinalizer(lambda: rabbitmqctl("delete_user", user, check=False))
    url = f"amqp://{user}:{quote(PASSWORD, safe='')}@127.0.0.1:5672/{vhost}"
    return url, user, vhost


def rabbit_names(kind: str) -> set[str]:
    return {line.split("\t")[0] for line in rabbitmqctl(kind).stdout.splitlines()[1:]}


@pytest.mark.parametrize("namespace", ["per-test", "none"])
def test_dedicated_vhost_and_user_run_calls(tmp_path, account, namespace):
    url, user, vhost = account
    extra = {} if namespace == "per-test" else {"EC_NAMESPACE": ""}
    env = env_for(f"sqlite:///{tmp_path / 'setup.db'}", url, **extra)
    first = ec("db", "init", "--broker-setup", env=env)
    assert first.returncode == 0, first.stderr
    assert f"user {user}: created" in first.stderr and f"ok: amqp://{user}:***@127.0.0.1:5672/{vhost}" in first.stderr
    again = ec("broker", "setup", env=env)
    assert again.returncode == 0 and f"user {user}: exists" in again.stderr, again.stderr
    for done in (first, again):
        assert PASSWORD not in done.stdout + done.stderr and quote(PASSWORD, safe="") not in done.stderr
    assert vhost in rabbit_names("list_vhosts") and user in rabbit_names("list_users")
    perms = rabbitmqctl("list_user_permissions", user).stdout
    assert perms.splitlines()[1].split("\t")[0] == vhost and len(perms.splitlines()) == 2

    with sample_network(tmp_path, url, **extra) as (net_env, proc):
        with workers(net_env, proc):
            done = ec("run", "do_something", "hello", env=net_env)
            assert (done.returncode, done.stdout) == (0, "do_something(hello)\n"), done.stderr
            counter = json.dumps(str(tmp_path / "flaky"))  # fails twice: retries through delay queues
            flaky = ec("run", "flaky", counter, "2", '"fine"', env=net_env)
            assert (flaky.returncode, flaky.stdout) == (0, "fine\n"), flaky.stderr
            lines = ec("map", "echo", env=net_env, input="a\nb\nc\n")  # replies to an amq.gen-... inbox
            assert lines.stdout.split() == ["a", "b", "c"], lines.stderr
            assert ec("dead", env=net_env).returncode == 0  # reads ec.dead
        queues = rabbitmqctl("list_queues", "-p", vhost, "name").stdout
        own = f"ec.{net_env['EC_NAMESPACE']}.s.do_something" if namespace == "per-test" else "ec.s.do_something"
        assert own in queues

    # the user has nothing in the default vhost, and nothing outside ec's names in its own
    denied = ec("run", "do_something", "x",
                env=dict(net_env, EC_BROKER=url.rsplit("/", 1)[0] + "/%2F"))
    assert denied.returncode == 3 and "access denied" in denied.stderr, denied.stderr
    assert len(denied.stderr.splitlines()) == 1 and "Traceback" not in denied.stderr
    assert quote(PASSWORD, safe="") not in denied.stderr
    import pika
    from pika.exceptions import ChannelClosedByBroker

    connection = pika.BlockingConnection(connection_parameters(url))
    try:
        for name in ("other", "ec.somebody-else.s.x" if namespace == "per-test" else "ecx.q"):
            with pytest.raises(ChannelClosedByBroker, match="ACCESS_REFUSED"):
                connection.channel().queue_declare(name, durable=True)
    finally:
        connection.close()

    gone = ec("broker", "teardown", "--yes", env=env)
    assert gone.returncode == 0 and f"vhost {vhost}: deleted" in gone.stderr, gone.stderr
    assert vhost not in rabbit_names("list_vhosts") and user not in rabbit_names("list_users")
    assert "absent" in ec("broker", "teardown", "--yes", env=env).stderr


# ---------------------------------------------------------------- real TLS


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def tls_port(ctl, certs):
    """A TLS listener started on the running RabbitMQ for this test (client certificates
    required), stopped afterwards whatever happened."""
    port = free_port()
    listener = f'{{"127.0.0.1", {port}}}'
    options = (f'[{{cacertfile, "{certs}/ca.pem"}}, {{certfile, "{certs}/server.pem"}}, '
               f'{{keyfile, "{certs}/server.key"}}, {{verify, verify_peer}}, {{fail_if_no_peer_cert, true}}]')
    try:
        started = rabbitmqctl("eval", f"rabbit_networking:start_ssl_listener({listener}, {options}, 2).",
                              check=False)
        assert started.returncode == 0 and started.stdout.strip() == "ok", started.stdout + started.stderr
        need_service("RabbitMQ TLS listener", "127.0.0.1", port)
        yield port
    finally:
        rabbitmqctl("eval", f"rabbit_networking:stop_tcp_listener({listener}).", check=False)
        assert f"{port}" not in rabbitmqctl("eval", "rabbit_networking:active_listeners().").stdout


def test_calls_over_amqps_with_a_verified_broker(tmp_path, certs, tls_port):
    creds = "guest:guest"  # loopback connections may use guest
    tls = f"certfile={certs}/client.pem&keyfile={certs}/client.key"
    url = f"amqps://{creds}@127.0.0.1:{tls_port}/%2F?cafile={certs}/ca.pem&{tls}"
    with sample_network(tmp_path, url) as (env, proc):
        with workers(env, proc):
            done = ec("run", "do_something", "over tls", env=env)
            assert (done.returncode, done.stdout) == (0, "do_something(over tls)\n"), done.stderr
            by_name = ec("run", "add_two", "1", "2",
                         env=dict(env, EC_BROKER=url.replace("127.0.0.1", "localhost")))
            assert by_name.stdout == "3\n", by_name.stderr

        # a broker whose certificate this CA did not sign is refused: one line, exit 3
        wrong = ec("run", "do_something", "x", env=dict(env, EC_BROKER=url.replace("/ca.pem", "/other-ca.pem")))
        assert wrong.returncode == 3, wrong.stderr
        assert "certificate verify failed" in wrong.stderr and "guest:***@" in wrong.stderr
        assert len(wrong.stderr.splitlines()) == 1 and "Traceback" not in wrong.stderr
        # a name the certificate does not carry
        renamed = ec("run", "do_something", "x", env=dict(env, EC_BROKER=url + "&server_name=mq.invalid"))
        assert renamed.returncode == 3 and "certificate verify failed" in renamed.stderr, renamed.stderr
        # the broker wants a client certificate
        anonymous = ec("run", "do_something", "x", env=dict(env, EC_BROKER=url.replace("&" + tls, "")))
        assert anonymous.returncode == 3 and len(anonymous.stderr.splitlines()) == 1, anonymous.stderr
        assert "Traceback" not in anonymous.stderr
