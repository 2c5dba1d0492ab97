"""A RabbitMQ cluster of three extra nodes on this machine, for tests and benchmarks.

Each node is RabbitMQ's own server script run as the ``rabbitmq`` user with a node name,
AMQP port, distribution port, config file, env file, enabled-plugins file, mnesia and log
directories of its own under one temporary directory; the cookie is the system's
(``HOME=/var/lib/rabbitmq``), epmd is shared. The system's node (rabbit@localhost, port
5672) is never touched: nothing here reads its config, names it or signals it, and every
process is found and signalled by pid (a node's script runs in a session of its own).

    with RabbitCluster() as cluster:        # three nodes, joined to the first
        os.environ["EC_BROKER"] = cluster.url   # amqp://guest:guest@127.0.0.1:P1,...:P3/%2F
        cluster.kill(0)                     # kill -9 node 1's beam process
        cluster.start(0)                    # restart it; returns once it rejoined

From a shell (h15c's bench starts the same cluster)::

    python tests/rabbit_cluster.py          # prints the URL as JSON; Ctrl-C (or EOF) stops it

Needs root (it runs the nodes as ``rabbitmq``) and RabbitMQ's sbin directory
(:data:`SBIN`, or ``EC_RABBITMQ_SBIN``); :func:`unavailable` says why not.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
import weakref
from dataclasses import dataclass, field
from pathlib import Path

SBIN = Path(os.environ.get("EC_RABBITMQ_SBIN") or next(
    iter(sorted(Path("/usr/lib/rabbitmq/lib").glob("rabbitmq_server-*/sbin"))),
    Path("/usr/lib/rabbitmq/lib/rabbitmq_server/sbin")))
USER = "rabbitmq"
COOKIE_HOME = "/var/lib/rabbitmq"  # the rabbitmq user's home: its .erlang.cookie is the cluster's
CTL_TIMEOUT = 120.0  # seconds for one rabbitmqctl command (booting a node included)

CONFIG = """\
listeners.tcp.local = 127.0.0.1:{port}
loopback_users.guest = true
log.console = false
log.file.level = info
"""
ENV = """\
ERL_EPMD_ADDRESS=127.0.0.1
export ERL_FLAGS="-kernel inet_dist_use_interface {127,0,0,1}"
"""


def unavailable() -> str | None:
    """Why a cluster cannot be started here, or None."""
    if os.geteuid() != 0:
        return "starting RabbitMQ nodes needs root (they run as the rabbitmq user)"
    if not (SBIN / "rabbitmq-server").exists():
        return f"RabbitMQ's server script is not in {SBIN} (set EC_RABBITMQ_SBIN)"
    try:
        pwd.getpwnam(USER)
    except KeyError:
        return f"there is no {USER!r} user"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Node:
    name: str  # ec-<id>-<n>@localhost
    port: int  # AMQP
    dist_port: int
    home: Path  # config, env file, mnesia, logs
    proc: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"

    def env(self) -> dict[str, str]:
        """The environment of this node's server script and of rabbitmqctl aimed at it."""
        keep = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "TERM")}
        return keep | {
            "HOME": COOKIE_HOME,
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_CONFIG_FILE": str(self.home / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.home / "advanced.config"),
            "RABBITMQ_CONF_ENV_FILE": str(self.home / "rabbitmq-env.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.home / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(self.home / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.home / "log"),
            "RABBITMQ_PID_FILE": str(self.home / "node.pid"),
        }


def _kill_group(proc: subprocess.Popen | None) -> None:
    """SIGKILL the session a node's script leads (the script, beam, its helpers), by pid."""
    if proc is None:
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        pass


def _cleanup(nodes: list[Node], base: Path) -> None:
    """Kill every node we started and remove the directory (the finalizer: no self)."""
    for node in nodes:
        _kill_group(node.proc)
        node.proc = None
    shutil.rmtree(base, ignore_errors=True)


class RabbitCluster:
    """``size`` RabbitMQ nodes joined into one cluster (see the module doc)."""

    def __init__(self, size: int = 3, base: Path | None = None):
        why = unavailable()
        if why:
            raise RuntimeError(why)
        self.id = uuid.uuid4().hex[:6]
        self.base = Path(tempfile.mkdtemp(prefix=f"ec-rabbit-{self.id}-", dir=base))
        self.nodes = [Node(f"ec-{self.id}-{n}@localhost", free_port(), free_port(),
                           self.base / f"n{n}") for n in range(1, size + 1)]
        self.started_in = 0.0  # seconds start_all took
        self._finalizer = weakref.finalize(self, _cleanup, self.nodes, self.base)

    # -- addresses -----------------------------------------------------------------------

    @property
    def url(self) -> str:
        """One broker URL naming every node (ElasticCode's multi-host form)."""
        hosts = ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)
        return f"amqp://guest:guest@{hosts}/%2F"

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes]

    # -- life cycle ----------------------------------------------------------------------

    def start_all(self) -> RabbitCluster:
        """Start every node, join nodes 2..n to node 1; wait until all run in one cluster."""
        t0 = time.monotonic()
        rabbitmq = pwd.getpwnam(USER)
        os.chown(self.base, rabbitmq.pw_uid, rabbitmq.pw_gid)
        for node in self.nodes:
            node.home.mkdir()
            (node.home / "rabbitmq.conf").write_text(CONFIG.format(port=node.port))
            (node.home / "rabbitmq-env.conf").write_text(ENV)
            (node.home / "enabled_plugins").write_text("[].\n")
            for sub in ("mnesia", "log"):
                (node.home / sub).mkdir()
            for path in [node.home, *node.home.iterdir()]:
                os.chown(path, rabbitmq.pw_uid, rabbitmq.pw_gid)
        for node in self.nodes:
            self._spawn(node)
        for node in self.nodes:
            self._await(node)
        first = self.nodes[0].name
        for node in self.nodes[1:]:
            self.ctl(node, "stop_app")
            self.ctl(node, "join_cluster", first)
            self.ctl(node, "start_app")
            self._await(node)
        self.started_in = time.monotonic() - t0
        return self

    def _spawn(self, node: Node) -> None:
        log = open(node.home / "log" / "script.out", "ab")  # noqa: SIM115 - the child keeps it
        try:
            node.proc = subprocess.Popen([str(SBIN / "rabbitmq-server")], env=node.env(), cwd=node.home,
                                         user=USER, group=USER, extra_groups=[], stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            log.close()

    def _await(self, node: Node, timeout: float = CTL_TIMEOUT) -> None:
        """Until the node runs RabbitMQ (``await_startup``); fail if its script exited."""
        deadline = time.monotonic() + timeout
        while True:
            if node.proc is None or node.proc.poll() is not None:
                raise RuntimeError(f"RabbitMQ node {node.name} exited while starting:\n{self.log(node)}")
            done = self.ctl(node, "await_startup", "--timeout", "30", check=False)
            if done.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"RabbitMQ node {node.name} did not start within {timeout:.0f}s: "
                                   f"{done.stderr.strip()}\n{self.log(node)}")
            time.sleep(0.5)

    def ctl(self, node: Node | int, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """``rabbitmqctl -n NODE ARGS`` as the rabbitmq user (text output)."""
        node = self.nodes[node] if isinstance(node, int) else node
        done = subprocess.run([str(SBIN / "rabbitmqctl"), "-n", node.name, *args], env=node.env(),
                              cwd=COOKIE_HOME, user=USER, group=USER, extra_groups=[],
                              capture_output=True, text=True, timeout=CTL_TIMEOUT)
        if check and done.returncode != 0:
            raise RuntimeError(f"rabbitmqctl -n {node.name} {' '.join(args)}: exit {done.returncode}: "
                               f"{(done.stderr or done.stdout).strip()[-2000:]}")
        return done

    def beam_pid(self, i: int) -> int | None:
        """The pid of node ``i``'s Erlang VM: the script's descendant named beam.smp."""
        import psutil

        proc = self.nodes[i].proc
        if proc is None or proc.poll() is not None:
            return None
        try:
            kids = psutil.Process(proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return None
        return next((k.pid for k in kids if k.name().startswith("beam")), None)

    def kill(self, i: int) -> None:
        """kill -9 node ``i``'s beam process (a crash, not a shutdown); reap its script."""
        node = self.nodes[i]
        pid = self.beam_pid(i)
        if pid is None:
            raise RuntimeError(f"node {node.name} is not running")
        os.kill(pid, signal.SIGKILL)
        _kill_group(node.proc)  # the script and the VM's helper processes, by session
        node.proc = None

    def start(self, i: int) -> None:
        """Restart node ``i`` (killed or stopped) on its old data: it rejoins the cluster;
        returns once it runs and sees every other running node."""
        node = self.nodes[i]
        if node.proc is not None and node.proc.poll() is None:
            raise RuntimeError(f"node {node.name} is running")
        self._spawn(node)
        self._await(node)
        self._await_cluster(node)

    def _await_cluster(self, node: Node, timeout: float = CTL_TIMEOUT) -> None:
        want = {n.name for n in self.nodes if n.proc is not None}
        deadline = time.monotonic() + timeout
        while True:
            out = self.ctl(node, "cluster_status", "--formatter", "json", check=False)
            if out.returncode == 0:
                running = set(json.loads(out.stdout).get("running_nodes", []))
                if want <= running:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{node.name} did not rejoin within {timeout:.0f}s: {out.stdout.strip()}")
            time.sleep(0.5)

    def running(self) -> list[int]:
        return [i for i, n in enumerate(self.nodes) if n.proc is not None and n.proc.poll() is None]

    def log(self, node: Node, tail: int = 4000) -> str:
        """The end of a node's logs (its script output and RabbitMQ's log file)."""
        text = []
        for path in sorted((node.home / "log").glob("*")):
            if path.is_file():
                text.append(f"--- {path.name}\n{path.read_text(errors='replace')[-tail:]}")
        return "\n".join(text)

    def stop(self) -> None:
        """Kill every node and remove every directory (idempotent; also run at exit)."""
        self._finalizer()

    def __enter__(self) -> RabbitCluster:
        try:
            return self.start_all()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> int:
    why = unavailable()
    if why:
        print(f"rabbit_cluster: {why}", file=sys.stderr)
        return 3
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with RabbitCluster() as cluster:
        print(json.dumps({"url": cluster.url, "urls": cluster.urls, "nodes": [n.name for n in cluster.nodes],
                          "started_seconds": round(cluster.started_in, 1)}), flush=True)
        try:
            sys.stdin.read()  # until EOF or Ctrl-C
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
