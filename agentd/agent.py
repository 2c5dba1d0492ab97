"""The agent daemon: register, claim processors, deploy them, run and supervise workers.

Each loop (woken by a message on its control queue, or every ``interval`` seconds):
heartbeat; claim placements in one transaction (stale agents' placements are released
first); deploy what is placed here; turn the difference between desired and running
workers into actions (:mod:`agentd.reconcile`); report each processor's status.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from dataclasses import dataclass

from ectool import events, network
from ectool.agents import control_queue
from ectool.config import Config, load
from ectool.liveness import WORKER_ALIVE, agent_stale
from ectool.store import reconnect, retrying, transient
from ectool.store.models import Agent, Node, Placement, Processor, Socket, Worker, db, now

from . import sdnotify
from .deploy import DeployError, Deployment, deploy
from .procs import Pool, cores
from .reconcile import (
    Action,
    Candidate,
    Desired,
    observed_status,
    plan_claims,
    reconcile,
    workers_wanted,
)
from .schedule_loop import ScheduleLoop

#: seconds without a heartbeat before an agent is lost and its processors are re-placed
STALE = agent_stale()
#: seconds between per-minute stats rollups (ec stats history), and the most one may take
ROLLUP_EVERY = 60.0
ROLLUP_BUDGET = 2.0


def log(msg: str) -> None:
    print(f"ec-agentd: {msg}", file=sys.stderr, flush=True)


@dataclass
class Deployed:
    key: tuple
    deployment: Deployment | None
    error: str | None
    at: float


class AgentDaemon:
    def __init__(self, config: Config, name: str | None = None, cpus: int | None = None,
                 interval: float = 2.0, grace: float = 30.0, node: str | None = None) -> None:
        self.config = config
        # the node this agent registers as: its host name unless overridden (--node,
        # EC_NODE; like kubelet's --hostname-override, for several test hosts on one machine)
        self.host = node or os.environ.get("EC_NODE") or socket.gethostname()
        self.name = name or self.host
        self.pool = Pool(cores(cpus), grace=grace)
        self.cpus = len(self.pool.cpus)
        self.interval = interval
        self.stopping = False
        self.reload = False
        self.deployed: dict[str, Deployed] = {}
        self.fatal: dict[str, tuple[float, str]] = {}  # processor -> (updated stamp, reason)
        self.served: dict[str, tuple] = {}  # processor -> what its workers read of its sockets
        self.agent: Agent = None  # type: ignore[assignment]  # set by register(), before any use

    # -- registration ------------------------------------------------------------------
    def register(self) -> None:
        from ectool.store import open_store

        open_store(self.config.db)
        with db.atomic():
            node, _ = Node.get_or_create(name=self.host, defaults={"cpus": os.cpu_count() or 1})
            agent = Agent.get_or_none(Agent.name == self.name)
            if agent is None:
                agent = Agent.create(name=self.name, node=node, cpus=self.cpus)
            self.refuse_a_twin(agent, node)
            agent.node, agent.pid, agent.cpus, agent.status, agent.heartbeat = node, os.getpid(), self.cpus, "online", now()
            agent.save()
            # workers recorded for a previous run of this agent are gone (they exit with it)
            Worker.update(status="stopped").where((Worker.agent == agent) & (Worker.status != "stopped")).execute()
        self.agent = agent
        events.configure(self.config)
        events.emit("agent.online", agent=self.name, cpus=self.cpus)

    def refuse_a_twin(self, agent: Agent, node: Node) -> None:
        """Raise :class:`~ectool.errors.Conflict` (exit 2) if another live agent holds this
        name: one heartbeating on another node, or a running process on this one. A stale
        or stopped holder is taken over (an agent restarted after a crash, or moved)."""
        from ectool.errors import Conflict

        if agent.status != "online" or agent.pid == os.getpid() or not agent.heartbeat:
            return
        age = (now() - agent.heartbeat).total_seconds()
        if age >= STALE:
            return
        if agent.node_id != node.id:
            raise Conflict(f"agent {self.name!r} is already running on node {agent.node.name!r} "
                           f"(heartbeat {age:.0f}s ago); give this one another --name")
        import psutil

        if agent.pid and psutil.pid_exists(agent.pid):
            raise Conflict(f"agent {self.name!r} is already running (pid {agent.pid}); use --name")

    def roll_up_stats(self) -> None:
        """Fold the minutes since the last rollup into the stats history and prune it
        (idempotent, so every agent may do it); a failure is logged, never fatal."""
        from ectool import metrics

        try:
            metrics.maintain(self.config.stats_retention, budget=ROLLUP_BUDGET)
        except Exception as exc:  # noqa: BLE001 - the history catches up on the next round
            log(f"stats rollup failed: {exc}")

    def heartbeat(self) -> None:
        """Beat, and report the node's load. An agent another one took for lost (it was
        silent past EC_AGENT_STALE: stopped, or cut off from the store) and is back marks
        the workers it still runs running again."""
        me = Agent.id == self.agent.id
        if Agent.update(status="online").where(me & (Agent.status == "lost")).execute():
            log("this agent was taken for lost (its placements were released); back online")
            Worker.update(status="running").where((Worker.agent == self.agent.id) & (Worker.status == "lost")
                                                  & Worker.pid.in_(self.pool.pids() or [0])).execute()
        Agent.update(heartbeat=now(), status="online", pid=os.getpid()).where(me).execute()
        if hasattr(os, "getloadavg"):
            Node.update(load1=round(os.getloadavg()[0], 2)).where(Node.id == self.agent.node_id).execute()

    # -- placement -------------------------------------------------------------------
    def claim(self) -> dict[str, int]:
        """Release stale agents' placements and claim work for free cores, atomically.

        Stale agents (no heartbeat for EC_AGENT_STALE) and their workers are marked lost.
        Placement follows this node's state (:func:`agentd.reconcile.plan_claims`): a
        cordoned node takes nothing new, a draining one keeps its workers only until
        replacements serve elsewhere; placements on draining nodes do not count toward a
        processor's concurrency, so the other agents claim those replacements."""
        lock = {"lock_type": "IMMEDIATE"} if db.obj.__class__.__name__.startswith("Sqlite") else {}
        with db.atomic(**lock):
            at = now()
            cutoff = at - _seconds(STALE)
            lost = {a.id: (a.name, a.node.name) for a in Agent.select(Agent, Node).join(Node).where(
                (Agent.id != self.agent.id) & (Agent.status == "online") & (Agent.heartbeat < cutoff))}
            stale = list(lost)
            if stale:
                Placement.delete().where(Placement.agent.in_(stale)).execute()
                Agent.update(status="lost").where(Agent.id.in_(stale)).execute()
                Worker.update(status="lost").where(Worker.agent.in_(stale) & Worker.status.not_in(
                    ("stopped", "lost"))).execute()
                log(f"re-placing processors of stale agent(s) {', '.join(n for n, _ in lost.values())}; "
                    "they and their workers are lost")
            query = Processor.select().where(Processor.requested_status != "stopped")
            if not lock:
                query = query.for_update()
            procs = list(query)
            state = Node.select(Node.state).where(Node.id == self.agent.node_id).scalar() or "schedulable"
            draining = {a.id for a in Agent.select(Agent.id).join(Node).where(Node.state == "draining")}
            placed: dict[int, int] = {}
            mine: dict[int, int] = {}
            for p in Placement.select():
                if p.agent_id == self.agent.id:
                    mine[p.processor_id] = mine.get(p.processor_id, 0) + p.workers
                elif p.agent_id not in draining:
                    placed[p.processor_id] = placed.get(p.processor_id, 0) + p.workers
            ready = self.serving_elsewhere(at, draining) if state == "draining" else {}
            sockets: dict[int, list[int]] = {}
            for pid, conc in Socket.select(Socket.processor, Socket.concurrency).tuples():
                sockets.setdefault(pid, []).append(conc)
            candidates = [Candidate(p.name, workers_wanted(p.concurrency, sockets.get(p.id, [])), p.host,
                                    placed.get(p.id, 0), mine.get(p.id, 0), ready.get(p.id, 0))
                          for p in procs if p.name not in self.fatal]
            plan = plan_claims(candidates, self.host, self.name, self.cpus, state)
            by_name = {p.name: p for p in procs}
            Placement.delete().where((Placement.agent == self.agent.id) & Placement.processor.not_in(
                [by_name[n].id for n in plan] or [0])).execute()
            for name, count in plan.items():
                p = by_name[name]
                if mine.get(p.id) != count:
                    Placement.insert(processor=p, agent=self.agent.id, workers=count).on_conflict(
                        conflict_target=[Placement.processor, Placement.agent],
                        update={Placement.workers: count}).execute()
        for name, node in lost.values():
            events.emit("agent.lost", agent=name, node=node)
        return plan

    def serving_elsewhere(self, at, draining: set[int]) -> dict[int, int]:
        """processor id -> workers serving it now off draining nodes: running, with a fresh
        heartbeat, run by a live agent (or by none: ``ec worker``). A draining agent hands
        a processor over only once these replacements run."""
        from peewee import JOIN, fn

        fresh = at - _seconds(WORKER_ALIVE)
        cutoff = at - _seconds(STALE)
        agent_ok = (Agent.status == "online") & (Agent.heartbeat >= cutoff) & Agent.id.not_in(
            list(draining | {self.agent.id}))
        query = (Worker.select(Worker.processor, fn.COUNT(Worker.id)).join(Agent, JOIN.LEFT_OUTER)
                 .where((Worker.status == "running") & (Worker.heartbeat >= fresh)
                        & (Worker.agent.is_null() | agent_ok))
                 .group_by(Worker.processor))
        return dict(query.tuples())

    # -- deployment ------------------------------------------------------------------
    def deployment(self, p: Processor) -> Deployed:
        restart = p.status == "pending"  # set by `ec proc restart` (and on creation)
        trusted = network.is_trusted(p.gitrepo)
        key = (p.gitrepo, p.branch, p.commit, p.module, p.updated, trusted)
        known = self.deployed.get(p.name)
        if known and known.key == key and (known.deployment or time.monotonic() - known.at < 60):
            return known
        if not trusted:
            d = Deployed(key, None, f"repository not trusted: {p.gitrepo} (ec trust add PATTERN)", time.monotonic())
        else:
            self.set_status(p, "deploying", None)
            started = time.monotonic()
            try:
                dep = deploy(p.gitrepo, p.branch, p.commit, p.module, p.runtime)
                d = Deployed(key, dep, None, time.monotonic())
                log(f"deployed {p.name} at {dep.commit[:12]}" + (f" ({dep.branch})" if dep.branch else "")
                    + f" in {time.monotonic() - started:.2f}s")
                if (p.deployed_branch, p.deployed_commit) != (dep.branch, dep.commit):
                    # not save(): p.updated is part of the deployment key
                    Processor.update(deployed_branch=dep.branch, deployed_commit=dep.commit).where(
                        Processor.id == p.id).execute()
                    p.deployed_branch, p.deployed_commit = dep.branch, dep.commit
                events.emit("processor.deployed", processor=p.name, commit=dep.commit,
                            seconds=round(time.monotonic() - started, 2))
            except DeployError as exc:
                d = Deployed(key, None, str(exc), time.monotonic())
        if d.error:
            log(f"cannot deploy {p.name}: {d.error}")
            from ectool.store.models import Event

            Event.create(kind="processor.error", host=self.host, data=d.error, socket=p.name)
            events.emit("processor.error", processor=p.name, error=d.error)
        if known and restart and known.key[:4] == key[:4]:
            self.pool.stop(p.name, None, len(self.pool.slots))  # ec proc restart: fresh workers
        self.deployed[p.name] = d
        return d

    def set_status(self, p: Processor, status: str, reason: str | None) -> None:
        if (p.status, p.status_reason) != (status, reason):
            Processor.update(status=status, status_reason=reason).where(Processor.id == p.id).execute()
            p.status, p.status_reason = status, reason

    # -- converge ----------------------------------------------------------------------
    def converge(self, plan: dict[str, int]) -> None:
        self.handle_fatal(self.pool.poll())
        procs = {p.name: p for p in Processor.select().where(Processor.name.in_(list(plan) or [""]))}
        served = self.renew_on_socket_change(list(plan))
        self.act(reconcile(self.desired(plan, procs, served), self.pool.actual()))
        self.handle_fatal(self.pool.poll())
        running = self.pool.actual()
        for name in plan:
            p, d = procs[name], self.deployed.get(name)
            status = observed_status(p.requested_status, self.fatal.get(name, (None, None))[1],
                                     d.error if d else None, bool(running.get(name)),
                                     bool(d and d.deployment and not served.get(name)))
            if status:
                self.set_status(p, *status)
        # processors no longer placed here: drain (reconcile already stopped them); one a
        # person stopped (`ec proc stop`) is no longer claimed, so it is reported here
        gone = set(self.deployed) - set(plan)
        for p in Processor.select().where(Processor.name.in_(list(gone) or [""])
                                          & (Processor.requested_status == "stopped")):
            self.set_status(p, "stopped", None)
        for name in gone:
            self.deployed.pop(name, None)
            self.served.pop(name, None)

    def desired(self, plan: dict[str, int], procs: dict[str, Processor],
                served: dict[str, tuple]) -> dict[str, Desired]:
        """What reconcile should reach for each processor of ``plan`` (deploying each one
        not stopped); one whose workers keep crashing is left out until it changes."""
        desired: dict[str, Desired] = {}
        for name, count in plan.items():
            p = procs[name]
            fatal = self.fatal.get(name)
            if fatal and fatal[0] != p.updated:
                del self.fatal[name]  # the processor changed (ec proc restart): try again
            elif fatal:
                continue
            d = self.deployment(p) if p.requested_status != "stopped" else None
            # no sockets yet (`ec add processor`, then `ec add socket`): deployed, but no
            # workers, which would have nothing to serve (they would exit, again and again)
            desired[name] = Desired(count if served.get(name) else 0, p.requested_status,
                                    d.deployment.commit if d and d.deployment else None)
        return desired

    def act(self, actions: list[Action]) -> None:
        """Start and stop workers as reconcile said (in its order: starts before drains)."""
        for action in actions:
            if action.kind == "start":
                dep = self.deployed[action.processor].deployment
                for _ in range(action.count):
                    self.pool.start(action.processor, action.commit, self.worker_argv(action.processor, dep),  # type: ignore[arg-type]
                                    self.worker_env())
                log(f"started {action.count} worker(s) of {action.processor} at {action.commit[:12]}")  # type: ignore[index]
            else:
                self.pool.stop(action.processor, action.commit, action.count)
                log(f"draining {action.count} worker(s) of {action.processor}")

    def renew_on_socket_change(self, names: list[str]) -> dict[str, tuple]:
        """Workers read their processor's sockets when they start: when a socket is added,
        changed or deleted, the running ones drain and reconcile starts new ones at once
        (as `ec proc restart` does), so the change is served without a restart. Returns
        what each of ``names`` has of sockets (empty: none)."""
        served: dict[str, list[tuple]] = {name: [] for name in names}
        for s in Socket.select(Socket, Processor.name).join(Processor).where(Processor.name.in_(names or [""])):
            served[s.processor.name].append((s.name, s.task, s.queue_id, s.timeout, s.retries, s.backoff))
        for name, rows in served.items():
            key = tuple(sorted(rows, key=lambda row: row[0]))
            if self.served.get(name, key) != key and self.pool.actual().get(name):
                log(f"sockets of {name} changed: renewing its workers")
                self.pool.stop(name, None, len(self.pool.slots))
            self.served[name] = key
        return self.served

    def handle_fatal(self, fatals) -> None:
        """A worker that keeps crashing puts its processor in ``error`` until it changes."""
        for fatal in fatals:
            p = Processor.get_or_none(Processor.name == fatal.processor)
            if p is None:
                continue
            reason = f"worker crashed {fatal.failures} times in a row (exit status {fatal.last_code})"
            log(f"{p.name}: {reason}")
            self.fatal[p.name] = (p.updated, reason)
            self.pool.stop(p.name, None, len(self.pool.slots))
            self.set_status(p, "error", reason)
            events.emit("processor.error", processor=p.name, error=reason)

    def worker_argv(self, processor: str, dep: Deployment) -> list[str]:
        return [sys.executable, "-m", "ectool", "worker", "-p", processor, "--child",
                "--python", dep.python, "--path", str(dep.src), "--commit", dep.commit]

    def worker_env(self) -> dict[str, str]:
        return dict(os.environ, EC_DB=self.config.db, EC_BROKER=self.config.broker,
                    EC_PARENT_PID=str(os.getpid()), EC_AGENT_ID=str(self.agent.id), EC_NODE=self.host)

    # -- main loop ---------------------------------------------------------------------
    def request_stop(self, *_: object) -> None:
        self.stopping = True

    def request_reload(self, *_: object) -> None:
        self.reload = True

    def wait_for_wake(self, control, timeout: float) -> None:
        """Sleep until a control message, ``timeout`` or a stop request (checked every
        half second, so SIGTERM is acted on at once whatever the interval); ack the
        messages."""
        deadline = time.monotonic() + timeout
        wake = None
        while wake is None and not self.stopping:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            wake = control.get(timeout=min(left, 0.5))
        woken = []
        while wake is not None:
            woken.append(wake)
            wake = control.get(timeout=0)
        if woken:
            control.ack(woken)

    def run(self) -> None:
        from ectool.transport import open_transport

        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        signal.signal(signal.SIGHUP, self.request_reload)
        retrying(lambda _: self.register(), what="registering the agent", stop=lambda: self.stopping)
        transport = open_transport(self.config)
        queue = control_queue(self.name, self.config.namespace)
        transport.declare(queue, kind="classic")
        transport.purge(queue)
        control = transport.consumer([queue], prefetch=16)
        log(f"agent {self.name} online on {self.host} with {self.cpus} core(s), pid {os.getpid()}")
        sdnotify.notify(f"READY=1\nSTATUS=serving with {self.cpus} cores")
        next_rollup = time.monotonic()
        outage: float | None = None
        schedules = ScheduleLoop(self.config, self.name, self.interval)  # no beat process: every agent fires
        schedules.start()
        try:
            while not self.stopping:
                if self.reload:
                    self.reload = False
                    self.config = load(db=self.config.db, broker=self.config.broker)
                    log("configuration reloaded")
                try:
                    self.heartbeat()
                    plan = self.claim()
                    self.converge(plan)
                    if outage is not None:
                        log(f"store back after {time.monotonic() - outage:.1f}s")
                        outage = None
                except Exception as exc:
                    if not transient(exc):
                        raise
                    # a store outage: keep the workers running (they wait it out too) and
                    # try again on the next round
                    if outage is None:
                        outage = time.monotonic()
                        log(f"store unavailable ({str(exc).strip().splitlines()[0] if str(exc).strip() else exc!r}); "
                            "workers keep running, retrying")
                    reconnect()
                if time.monotonic() >= next_rollup:
                    next_rollup = time.monotonic() + ROLLUP_EVERY
                    self.roll_up_stats()
                sdnotify.notify("WATCHDOG=1")
                self.wait_for_wake(control, 0.5 if self.pool.slots and any(
                    s.proc is None for s in self.pool.slots) else self.interval)
        finally:
            sdnotify.notify("STOPPING=1")
            schedules.stop()
            log("stopping: draining workers")
            self.pool.stop_all()
            control.close()
            transport.close()
            try:
                with db.atomic():
                    Placement.delete().where(Placement.agent == self.agent.id).execute()
                    Agent.update(status="offline", heartbeat=now()).where(Agent.id == self.agent.id).execute()
            except Exception as exc:
                if not transient(exc):
                    raise
                log("store unavailable: could not mark this agent offline (its heartbeat will age)")
            events.emit("agent.offline", agent=self.name)
            events.bus().flush(1.0)
            log("stopped")


def _seconds(s: float):
    import datetime as dt

    return dt.timedelta(seconds=s)
