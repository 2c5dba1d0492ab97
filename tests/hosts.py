"""Test hosts: network namespaces, each a "machine" running ``ec-agentd`` as a user would.

    with hosts(3, tmp, db_url, broker_url, env) as net:   # net.hosts: [Host, ...]
        net.kill(net.hosts[0]); net.partition(h); net.heal(h); net.start(h)

Layout (all made here, all removed here, even on failure):

* one *network* namespace ``ecmh-PID-N-net`` where :mod:`nsforward` listens on the service
  ports found in the store and broker URLs; it connects to the root namespace's loopback
  (PostgreSQL, RabbitMQ). Processes in other namespaces cannot reach that loopback, and this
  keeps every address the hosts use inside our own namespaces;
* one namespace per host ``ecmh-PID-N-hostI`` with its loopback up and one veth link,
  ``eth0`` = 10.213.I.2/24, whose peer ``hI`` = 10.213.I.1/24 sits in the network
  namespace. The host's ``EC_DB``/``EC_BROKER`` point at 10.213.I.1, so all its traffic
  crosses that one link: ``partition`` sets the peer down (a pulled cable: TCP stalls,
  heartbeats time out, nothing is refused), ``heal`` sets it up again;
* on each host ``ec-agentd`` from this venv, started through ``ip netns exec`` and
  ``unshare --uts`` with its own host name (``hostI``) and its own ``EC_HOME``; the pid held
  is the agent's own (each step execs the next), so ``kill`` is a real ``kill -9``.

Deleting a namespace deletes the veth links in it, so nothing is left in the root
namespace but the forwarder process, killed by pid. A sweep at start removes namespaces
(and their processes and forwarders) left by a run whose process is gone. Needs root,
``ip`` (iproute2) and ``unshare``; :func:`unavailable` says why not.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

PREFIX = "ecmh"
HERE = Path(__file__).resolve().parent
_runs = itertools.count(1)
_LOCAL = re.compile(r"(?<=[@/,])(?:127\.0\.0\.1|localhost):(\d+)")


class HostsUnavailable(RuntimeError):
    """Test hosts cannot be made here (not root, no iproute2/unshare)."""


def unavailable() -> str | None:
    """Why test hosts cannot be made on this machine (None: they can)."""
    if os.geteuid() != 0:
        return "test hosts need root (network namespaces)"
    for tool in ("ip", "unshare", "hostname"):
        if shutil.which(tool) is None:
            return f"test hosts need `{tool}` on PATH"
    probe = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"`ip netns` does not work: {probe.stderr.strip()}"
    return None


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done


def netns_pids(netns: str) -> list[int]:
    done = ip("netns", "pids", netns, check=False)
    return [int(p) for p in done.stdout.split()] if done.returncode == 0 else []


def kill_pids(pids: list[int], timeout: float = 10) -> None:
    """SIGKILL every pid and wait until each is gone (or a zombie a parent must reap)."""
    procs = []
    for pid in set(pids):
        try:
            p = psutil.Process(pid)
            p.kill()
            procs.append(p)
        except psutil.Error:
            pass
    psutil.wait_procs(procs, timeout=timeout)


def remove_netns(netns: str) -> None:
    kill_pids(netns_pids(netns))
    ip("netns", "del", netns, check=False)


def sweep() -> list[str]:
    """Remove namespaces (their processes, their forwarders) of runs whose process is gone."""
    removed = []
    for line in ip("netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.strip() else ""
        m = re.match(rf"{PREFIX}-(\d+)-", name)
        if not m or psutil.pid_exists(int(m.group(1))):
            continue
        for p in psutil.process_iter(["cmdline"]):
            cmd = p.info["cmdline"] or []
            if any(a.endswith("nsforward.py") for a in cmd) and name in cmd:
                kill_pids([p.pid])
        remove_netns(name)
        removed.append(name)
    return removed


@dataclass
class Host:
    name: str  # host name (UTS), also the agent's name
    index: int
    netns: str
    gateway: str  # the forwarder's address as this host sees it
    home: Path
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen | None = None
    starts: int = 0
    pids_killed: list[int] = field(default_factory=list)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc and self.proc.poll() is None else None


class Hosts:
    """N test hosts around one forwarder; a context manager that always cleans up."""

    def __init__(self, n: int, tmp: Path, db_url: str, broker_url: str, env: dict[str, str] | None = None,
                 agent_args: tuple[str, ...] = ("--cpus", "1")) -> None:
        reason = unavailable()
        if reason:
            raise HostsUnavailable(reason)
        self.run = f"{PREFIX}-{os.getpid()}-{next(_runs)}"
        self.tmp = Path(tmp)
        self.db_url, self.broker_url = db_url, broker_url
        self.base_env = dict(env if env is not None else os.environ)
        self.agent_args = agent_args
        self.ports = sorted({int(p) for url in (db_url, broker_url) for p in _LOCAL.findall(url)})
        self.net = f"{self.run}-net"
        self.forwarder: subprocess.Popen | None = None
        self.hosts: list[Host] = []
        self.n = n
        self.made: list[str] = []  # namespaces, removed in reverse

    # -- setup -------------------------------------------------------------------------
    def __enter__(self) -> Hosts:
        sweep()
        try:
            self._make_network()
            for i in range(1, self.n + 1):
                self.hosts.append(self._make_host(i))
            for h in self.hosts:
                self.start(h)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is not None:
            self.show_logs()
        self.close()

    def _make_network(self) -> None:
        ip("netns", "add", self.net)
        self.made.append(self.net)
        ip("-n", self.net, "link", "set", "lo", "up")
        self.forwarder = subprocess.Popen([sys.executable, str(HERE / "nsforward.py"), self.net,
                                           *map(str, self.ports)], stdout=subprocess.PIPE, text=True)
        line = self.forwarder.stdout.readline().strip()
        if line != "ready":
            raise RuntimeError(f"the forwarder did not start (exit {self.forwarder.poll()})")

    def _make_host(self, i: int) -> Host:
        name = f"host{i}"
        netns = f"{self.run}-{name}"
        ip("netns", "add", netns)
        self.made.append(netns)
        ip("-n", netns, "link", "set", "lo", "up")
        ip("-n", netns, "link", "add", "eth0", "type", "veth", "peer", "name", f"h{i}", "netns", self.net)
        gateway = f"10.213.{i}.1"
        ip("-n", self.net, "addr", "add", f"{gateway}/24", "dev", f"h{i}")
        ip("-n", netns, "addr", "add", f"10.213.{i}.2/24", "dev", "eth0")
        ip("-n", self.net, "link", "set", f"h{i}", "up")
        ip("-n", netns, "link", "set", "eth0", "up")
        home = self.tmp / name / "home"
        home.mkdir(parents=True, exist_ok=True)
        env = dict(self.base_env, EC_HOME=str(home), EC_DB=self.local(self.db_url, gateway),
                   EC_BROKER=self.local(self.broker_url, gateway), NO_COLOR="1")
        return Host(name, i, netns, gateway, home, env, self.tmp / name / "agent.log")

    @staticmethod
    def local(url: str, gateway: str) -> str:
        """URL with the root's loopback replaced by the forwarder's address on a host."""
        return _LOCAL.sub(lambda m: f"{gateway}:{m.group(1)}", url)

    # -- hosts ---------------------------------------------------------------------------
    def host(self, name: str) -> Host:
        return next(h for h in self.hosts if h.name == name)

    def command(self, host: Host, argv: list[str]) -> list[str]:
        """ARGV run on HOST: in its namespace, under its own host name (each step execs)."""
        return ["ip", "netns", "exec", host.netns, "unshare", "--uts", "sh", "-c",
                'hostname "$1" && shift && exec "$@"', "sh", host.name, *argv]

    def start(self, host: Host, *args: str) -> int:
        """Start ``ec-agentd`` on HOST the way a user would; return its pid."""
        if host.pid:
            raise RuntimeError(f"{host.name} already runs an agent (pid {host.pid})")
        agentd = str(Path(sys.executable).parent / "ec-agentd")
        argv = [agentd, "--interval", "1", "--grace", "10", *(args or self.agent_args)]
        with open(host.log, "a") as log:
            log.write(f"----- start {host.starts + 1}: {' '.join(argv)}\n")
            log.flush()
            host.proc = subprocess.Popen(self.command(host, argv), env=host.env, stdout=log, stderr=log,
                                         cwd=host.home)
        host.starts += 1
        deadline = time.monotonic() + 15
        while True:  # the pid we hold becomes the agent's once ip/unshare/sh have exec'd
            try:
                if any(a.endswith("ec-agentd") for a in psutil.Process(host.proc.pid).cmdline()[:2]):
                    return host.proc.pid
            except psutil.Error:
                pass
            if host.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"ec-agentd did not start on {host.name}:\n{self.log_tail(host)}")
            time.sleep(0.02)

    def processes(self, host: Host) -> list[int]:
        """The agent's pid and its descendants' (its workers, deploys)."""
        if host.pid is None:
            return []
        try:
            agent = psutil.Process(host.pid)
            return [agent.pid, *(c.pid for c in agent.children(recursive=True))]
        except psutil.NoSuchProcess:
            return []

    def kill(self, host: Host) -> list[int]:
        """The whole host dies: kill -9 its agent and all its workers (and anything else
        left in its namespace). Returns the pids killed."""
        pids = self.processes(host)
        kill_pids(pids + netns_pids(host.netns))
        if host.proc:
            host.proc.wait(10)
        host.pids_killed += pids
        return pids

    def stop(self, host: Host, grace: float = 30) -> None:
        """SIGTERM the agent (it drains its workers), SIGKILL whatever is left after GRACE."""
        if host.pid:
            host.proc.send_signal(signal.SIGTERM)
            try:
                host.proc.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        self.kill(host)

    def partition(self, host: Host) -> None:
        """Cut HOST's link (its peer in the network namespace goes down)."""
        ip("-n", self.net, "link", "set", f"h{host.index}", "down")

    def heal(self, host: Host) -> None:
        ip("-n", self.net, "link", "set", f"h{host.index}", "up")

    # -- diagnostics and cleanup ----------------------------------------------------------
    def log_tail(self, host: Host, chars: int = 6000) -> str:
        try:
            return host.log.read_text()[-chars:]
        except OSError:
            return ""

    def show_logs(self) -> None:
        for h in self.hosts:
            print(f"----- {h.name} ec-agentd log -----\n{self.log_tail(h)}")

    def close(self) -> None:
        """Remove every process, namespace and link this run made."""
        for h in self.hosts:
            try:
                self.kill(h)
            except Exception:  # noqa: BLE001 - cleanup goes on whatever failed
                pass
        if self.forwarder is not None:
            kill_pids([self.forwarder.pid])
            self.forwarder.wait(10)
            self.forwarder.stdout.close()
            self.forwarder = None
        while self.made:
            remove_netns(self.made.pop())


def hosts(n: int, tmp: Path, db_url: str, broker_url: str, env: dict[str, str] | None = None,
          agent_args: tuple[str, ...] = ("--cpus", "1")) -> Hosts:
    """N test hosts (a context manager); raises :class:`HostsUnavailable` if they cannot be made."""
    return Hosts(n, tmp, db_url, broker_url, env, agent_args)
