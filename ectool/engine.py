"""The workflow engine: submit a plan, and advance it as member calls finish.

Called by clients (to start a workflow) and by workers (after a member's outcome is
committed, before its delivery is acked). Every step is idempotent: node calls have
deterministic ids, join slots are unique per member, and the parallel node's row is
locked while its slots are counted, so a join fires exactly once even when members are
retried or redelivered. A worker that dies between committing a join and starting what
follows is covered by redelivery: the member comes back already final and the engine
re-sends the next step (``recovering``), which the deterministic ids make harmless.
A re-sent step is marked redelivered, so a step that was already final (one a worker
kept, below) recovers its own flow in turn rather than being settled unseen.

Inside a worker the engine runs in the transaction that records the outcomes, with an
:class:`~ectool.outbox.Outbox`: what it would publish or reply goes out only after that
commit, and the next step of a pipeline, a single call of a socket the worker serves, may
be kept (its row written ``running`` under the worker, no message) for the worker to run
at once (the hand-off; elasticcode(7) WORKFLOWS).

Members that finish together (a worker's batch) are advanced together: the slots they
fill in one parallel node are written, counted and (when complete) read in one locked
transaction, so a funnel of N members costs a few joins rather than N.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

from . import workflow as wfp
from .messages import CallMessage, dumps, from_json_value, new_id
from .outbox import Outbox
from .outcome import Outcome
from .publisher import Publisher, Target
from .store import ledger
from .store.ledger import INSERT_COLUMNS, insert_calls
from .store.models import FINAL_CALL_STATUS, Call, JoinSlot, Workflow, db, now
from .transport.base import REDELIVERED

#: the columns of the rows :meth:`Engine.begin` writes (composite nodes have ``started``)
BEGIN_COLUMNS = (*INSERT_COLUMNS, "started")


class Engine:
    def __init__(self, transport, max_message_bytes: int | None = None, namespace: str = "",
                 publisher: Publisher | None = None) -> None:
        self.transport = transport
        self.namespace = namespace
        self.max_bytes = max_message_bytes
        self.publisher = publisher or Publisher(transport, namespace)
        self._plans: dict[str, tuple[dict, str | None]] = {}
        self.outbox: Outbox | None = None  # set while a worker's transaction decides what follows

    # -- lookups ---------------------------------------------------------------------
    def plan(self, wf: str) -> tuple[dict, str | None]:
        if wf not in self._plans:
            row = Workflow.get_by_id(wf)
            self._plans[wf] = (json.loads(row.plan), row.reply_to)
        return self._plans[wf]

    def target(self, socket: str) -> Target:
        return self.publisher.target(socket)

    def publish(self, t: Target, bodies: list[bytes], headers: dict | None = None) -> None:
        """Publish now, or after the commit when there is an outbox."""
        if self.outbox is None:
            self.publisher.publish(t, bodies, headers)
        else:
            self.outbox.add(lambda: self.publisher.publish(t, bodies, headers))

    # -- starting --------------------------------------------------------------------
    def submit(self, plan: dict, *, reply_to: str | None = None, flow: str | None = None,
               replay_of: str | None = None) -> str:
        """Record a workflow and start it; returns its id (also its root call's id).
        ``replay_of``: the workflow this one replays (its leaves may carry a ``pin``)."""
        from .security import require

        require("RUN_TASK")
        wfp.validate(plan)
        for _, node in wfp.leaves(plan):
            self.target(node["socket"])  # unknown sockets fail before anything is written
        wf = new_id()
        # the plan, the root row and the first calls' rows: one round trip on PostgreSQL;
        # on SQLite the plan goes first (nothing refers to it until the call rows exist)
        self._plans[wf] = (plan, reply_to)
        self.begin(wf, plan, [], False, None, flow, root=wfp.label(plan),
                   first=ledger.workflow_sql(wf, json.dumps(plan), reply_to))
        if replay_of:
            ledger.mark_replay(wf, replay_of)
        return wf

    def begin(self, wf: str, plan: dict, path: list[int], has_input: bool, value: Any,
              flow: str | None = None, resend: bool = False, root: str | None = None,
              first: tuple[str, list] | None = None) -> None:
        """Start the node at ``path``: composite rows, then leaf calls (published durably,
        or kept by the worker whose outbox asks for it). ``resend``: a recovery, the calls'
        messages go out marked redelivered. ``root``: the label of the workflow's root row,
        written with the others (a new workflow), after ``first`` (its plan's statement)."""
        st = wfp.start(plan, path, has_input, value)
        stamp = now()
        rows: list[tuple] = [(wfp.node_id(wf, p), stamp, stamp, wfp.label(n), wfp.node_id(wf, p[:-1]), wf, flow,
                 "running", 0, None, stamp, stamp) for p, n in st.nodes if p]  # the root row exists...
        if root is not None:  # ...or is written here
            rows.insert(0, (wf, stamp, stamp, root, None, wf, flow, "running", 0, None, stamp, stamp))
        messages: dict[Target, list[bytes]] = defaultdict(list)
        for p, node, args in st.calls:
            cid = wfp.node_id(wf, p)
            t = self.target(node["socket"])
            msg = CallMessage(id=cid, socket=t.socket, task=t.task, args=args, kwargs=node.get("kwargs", {}),
                              root=wf, parent=wfp.node_id(wf, p[:-1]), flow=flow, cont={"wf": wf, "path": p},
                              pin=node.get("pin"))
            body = msg.encode(self.max_bytes)
            if not resend and self.outbox is not None and self.outbox.keeps(t.socket, len(st.calls)):
                # the hand-off: running here from this commit on, under this worker
                if ledger.insert_kept((cid, stamp, stamp, t.socket, msg.parent, wf, flow, "running", 1,
                                       dumps({"args": args, "kwargs": msg.kwargs}), stamp, stamp,
                                       self.outbox.host, self.outbox.pid), self.outbox.ran_at):
                    self.outbox.kept.append((t, msg))
                else:  # started before (a duplicate outcome): its message, as a redelivery, decides
                    self.publish(t, [body], {REDELIVERED: 1})
                continue
            messages[t].append(body)
            rows.append((cid, stamp, stamp, t.socket, msg.parent, wf, flow, "queued", 0,
                         dumps({"args": args, "kwargs": msg.kwargs}), stamp, None))
        if rows:
            insert_calls(rows, BEGIN_COLUMNS, ignore_existing=True, first=first)
        for t, bodies in messages.items():
            self.publish(t, bodies, {REDELIVERED: 1} if resend else None)
        for p, v in st.done:
            self.finished(wf, p, v)

    # -- plugs -------------------------------------------------------------------------
    def edges(self):
        """Every plug, re-read at most once a second: re-wiring applies to new calls."""
        import time

        from .network import plug_edges

        stamp, edges = getattr(self, "_edges", (0.0, []))
        if time.monotonic() - stamp > 1.0:
            edges = plug_edges()
            self._edges = (time.monotonic(), edges)
        return edges

    def on_plugs(self, msg: CallMessage, out: Outcome) -> None:
        """Fire the plugs of ``msg``'s socket for this outcome (idempotent per source call)."""
        from . import plugs

        edges = self.edges()
        fired = plugs.triggered(edges, msg.socket, out.status)
        if not fired:
            return
        value = out.result if out.status == "done" else {
            "call": out.id, "status": out.status, "error_type": out.error_type,
            "error_message": out.error_message}
        scope = msg.flow or msg.root or msg.id
        for edge in fired:
            if edge.argument:
                self._fan_in(edges, edge, scope, msg, value)
            else:
                self._send(plugs.plug_call_id(msg.id, edge.name), edge.target, [value], {}, msg)

    def _send(self, call_id: str, socket: str, args: list, kwargs: dict, src: CallMessage,
              parent: str | None = None) -> None:
        t = self.target(socket)
        msg = CallMessage(id=call_id, socket=t.socket, task=t.task, args=args, kwargs=kwargs,
                          root=src.root or src.id, parent=parent or src.id, flow=src.flow)
        body = msg.encode(self.max_bytes)
        ledger.insert_call(id=call_id, socket=t.socket, root=msg.root, parent=msg.parent, flow=msg.flow,
                           status="queued", args=dumps({"args": args, "kwargs": kwargs}))
        self.publish(t, [body])

    def _fan_in(self, edges, edge, scope: str, src: CallMessage, value: Any) -> None:
        """Record one bound argument; the arrival that completes the set fires the target once."""
        from . import plugs

        names = plugs.fanin_arguments(edges, edge.target)
        call_id = plugs.fanin_call_id(scope, edge.target)
        with ledger.locked(call_id):
            if ledger.get(call_id) is not None:
                return  # fired already in this scope
            JoinSlot.insert(workflow=scope, node=call_id, slot=names.index(edge.argument),
                            value=dumps(value)).on_conflict_replace().execute()
            slots = {s.slot: s.value for s in JoinSlot.select().where(JoinSlot.node == call_id)}
            if len(slots) < len(names):
                return
            kwargs = {names[i]: from_json_value(json.loads(v)) for i, v in slots.items()}
            JoinSlot.delete().where(JoinSlot.node == call_id).execute()
            t = self.target(edge.target)
            ledger.insert_call(False, id=call_id, socket=t.socket, root=src.root or src.id, parent=src.id,
                               flow=src.flow, status="queued", args=dumps({"args": [], "kwargs": kwargs}))
            msg = CallMessage(id=call_id, socket=t.socket, task=t.task, args=[], kwargs=kwargs,
                              root=src.root or src.id, parent=src.id, flow=src.flow)
            self.publish(t, [msg.encode(self.max_bytes)])

    # -- advancing -------------------------------------------------------------------
    def on_outcomes(self, items: list[tuple[CallMessage, Outcome]], recovering: bool = False) -> None:
        """Member calls of workflows are final (a batch, in any mix of workflows): a failed
        member fails its workflow; the others advance together (see :meth:`advance`)."""
        done = []
        for msg, out in items:
            cont = msg.cont or {}  # workflow members always carry their continuation
            wf, path = cont["wf"], list(cont["path"])
            if out.status == "done":
                done.append((wf, path, out.result))
            else:
                self.fail(wf, out)
        if done:
            self.advance(done, recovering)

    def finished(self, wf: str, path: list[int], value: Any, recovering: bool = False) -> None:
        self.advance([(wf, path, value)], recovering)

    def advance(self, done: list[tuple[str, list[int], Any]], recovering: bool = False) -> None:
        """Nodes finished, as (workflow, path, value): start what follows each, and fill the
        joins they reach, every member of one join at once; a join that completes
        finishes its parallel node, which advances in the next round."""
        while done:
            wfs = list({wf for wf, _, _ in done})
            roots = (self.outbox.take_roots(wfs) if self.outbox is not None else None) or ledger.statuses(wfs)
            joins: dict[tuple[str, tuple[int, ...]], list[wfp.Next]] = {}
            seen: set[tuple[str, tuple[int, ...]]] = set()
            for wf, path, value in done:
                root = roots.get(wf)
                if root is None or (root.status in FINAL_CALL_STATUS and not recovering):
                    continue  # failed or cancelled already: nothing more to start
                if (wf, tuple(path)) in seen:
                    continue  # the same node twice in one batch (a duplicate delivery)
                seen.add((wf, tuple(path)))
                nxt = self._walk(wf, path, value, root, recovering)
                if nxt is not None:
                    joins.setdefault((wf, tuple(nxt.path)), []).append(nxt)
            done = []
            for (wf, node_path), members in joins.items():
                values = self._join(wf, members, recovering)
                if values is not None:
                    done.append((wf, list(node_path), values))

    def _walk(self, wf: str, path: list[int], value: Any, root: Call, recovering: bool = False) -> wfp.Next | None:
        """Follow the node at ``path`` finishing with ``value`` up the plan: close finished
        pipelines, start the next step or finish the workflow; a join to fill is returned
        to the caller instead (who fills it with the other members that reached it)."""
        plan, _ = self.plan(wf)
        while True:
            nxt = wfp.after(plan, path, value)
            if nxt.kind == "finish":
                closed = self._close(wf, wf, value)
                root.status = "done"  # for the rest of this batch
                self.notify(wf, Outcome(wf, "done", result_json=dumps(value)) if closed else None)
                return None
            if nxt.kind == "start":
                self.begin(wf, plan, nxt.path, True, nxt.value, root.flow, resend=recovering)
                return None
            if nxt.kind == "complete":
                if nxt.path:  # the root (a pipeline) is closed by "finish", next round
                    self._close(wf, wfp.node_id(wf, nxt.path), value)
                path = nxt.path
                continue
            return nxt

    def _join(self, wf: str, members: list[wfp.Next], recovering: bool) -> list | None:
        """Fill the slots of ``members`` (one parallel node); the batch that completes the
        join gets the list of values (exactly once)."""
        node = wfp.node_id(wf, members[0].path)
        size = members[0].size
        with ledger.joining(node):
            row = ledger.join_node(node)
            p = db.obj.param
            params: list[Any] = []
            for m in members:
                params += [wf, node, m.index, dumps(m.value)]
            db.execute_sql(f'INSERT INTO "{JoinSlot._meta.table_name}" (workflow, node, slot, value) VALUES '
                           + ", ".join([f"({p}, {p}, {p}, {p})"] * len(members)) + " ON CONFLICT DO NOTHING",
                           params)
            # count first: the values are read once, by the batch that completes the join
            if JoinSlot.select().where(JoinSlot.node == node).count() < size:
                return None
            if row is not None and row.status == "done" and not recovering:
                return None  # fired before: a duplicate member must not fire it again
            slots = JoinSlot.select(JoinSlot.slot, JoinSlot.value).where(JoinSlot.node == node).order_by(JoinSlot.slot)
            values = [from_json_value(json.loads(s.value)) for s in slots]
            self._close(wf, node, values)
        return values

    def _close(self, wf: str, call_id: str, value: Any) -> bool:
        return ledger.close(call_id, "done", result=dumps(value))

    def fail(self, wf: str, out: Outcome) -> None:
        """A member failed for good: the workflow fails with that member's error."""
        fields: dict[str, Any] = {"error_type": out.error_type or out.status,
                  "error_message": f"member {out.id} {out.status}: {out.error_message or ''}".strip(),
                  "traceback": out.traceback}
        closed = ledger.close(wf, "failed", **fields)
        self.notify(wf, Outcome(wf, "failed", **fields) if closed else None)

    def notify(self, wf: str, out: Outcome | None = None) -> None:
        """Tell the client that started the workflow (best-effort; the store has it).
        ``out``: the outcome just written (else the row is read: it was final already)."""
        _, reply_to = self.plan(wf)
        if not reply_to:
            return
        row = ledger.get(wf) if out is None else None
        if out is not None or (row is not None and row.status in FINAL_CALL_STATUS):
            body = (out or Outcome.from_row(row)).encode()
            if self.outbox is not None:
                self.outbox.add(lambda: self._reply(reply_to, body))  # never before the commit
            else:
                self._reply(reply_to, body)

    def _reply(self, address: str, body: bytes) -> None:
        try:
            self.transport.reply(address, body)
        except Exception:  # noqa: BLE001 - best-effort; the store has the outcome
            pass

