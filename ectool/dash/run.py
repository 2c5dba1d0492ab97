"""The run dialog (``c``): send input to a socket and see its result.

The input is read like ``ec run SOCKET ARGS... -k NAME=VALUE`` (:mod:`ectool.arguments`):
shell words, each a JSON value when it parses and a string otherwise. The call goes
through :class:`ectool.calls.Client`, so the same privileges apply as for ``ec run``; it
is sent and awaited in a worker thread, so the dashboard stays live. Bad input, a denied
action or an unknown socket shows one line in the dialog. Esc closes it (a sent call goes on).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Select, Static

from ..arguments import parse_kwargs, parse_word
from ..errors import UsageError

#: a longer result is cut in the dialog (``ec result ID`` prints all of it)
SHOWN_CHARS = 20_000
#: seconds per wait for the outcome; the thread checks for cancellation in between
WAIT_SLICE = 1.0


def parse_input(args_text: str, kwargs_text: str = "") -> tuple[list[Any], dict[str, Any]]:
    """The dialog's two fields as (args, kwargs), as ``ec run`` reads its command line:
    ``3 10`` -> [3, 10]; ``"two words" '[1, 2]'`` -> ["two words", [1, 2]];
    ``n=3 name=x`` -> {"n": 3, "name": "x"}."""
    try:
        words, pairs = shlex.split(args_text), shlex.split(kwargs_text)
    except ValueError as exc:
        raise UsageError(f"cannot split the input into words: {exc}") from None
    return [parse_word(w) for w in words], parse_kwargs(tuple(pairs))


def error_line(exc: BaseException) -> str:
    """An exception as one line: ``PermissionDenied: user 'bob' lacks RUN_TASK ...``."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


@dataclass
class RunUpdate(Message):
    """Progress of the call (``status``), its result text (``result``), or an error."""

    status: str
    error: bool = False
    result: str | None = None


class RunScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape", "app.pop_screen", "Close")]

    def __init__(self, sockets: list[str], socket: str | None = None, args: str = "", kwargs: str = "") -> None:
        super().__init__()
        self.sockets = sockets
        self.socket = socket if socket in sockets else (sockets[0] if sockets else None)
        self.args, self.kwargs = args, kwargs
        self.call_id: str | None = None

    def compose(self) -> ComposeResult:
        with Vertical(id="run"):
            yield Label("Run a socket: Enter sends, Esc closes", id="run-title")
            with Horizontal(classes="run-row"):
                yield Label("socket", classes="run-label")
                yield Select([(s, s) for s in self.sockets], prompt="no sockets in the store",
                             allow_blank=self.socket is None, id="run-socket", compact=True,
                             **({"value": self.socket} if self.socket is not None else {}))  # type: ignore[arg-type]
            with Horizontal(classes="run-row"):
                yield Label("args", classes="run-label")
                yield Input(self.args, placeholder="as for ec run: 3 10  \"two words\"  '{\"a\": 1}'",
                            id="run-args", compact=True)
            with Horizontal(classes="run-row"):
                yield Label("kwargs", classes="run-label")
                yield Input(self.kwargs, placeholder="NAME=VALUE ... (like ec run -k)", id="run-kwargs",
                            compact=True)
            with Horizontal(classes="run-row"):
                yield Label("", classes="run-label")
                yield Button("Run", variant="primary", id="run-go", compact=True)
            yield Static("", id="run-status")
            with VerticalScroll(id="run-output"):
                yield Static("", id="run-result")

    def on_mount(self) -> None:
        self.query_one("#run-args", Input).focus()

    @on(Input.Submitted)
    @on(Button.Pressed, "#run-go")
    def send(self) -> None:
        socket = self.query_one("#run-socket", Select).value
        args_text = self.query_one("#run-args", Input).value
        kwargs_text = self.query_one("#run-kwargs", Input).value
        self.query_one("#run-result", Static).update("")
        if not isinstance(socket, str):
            self.show(RunUpdate("UsageError: pick a socket", error=True))
            return
        try:
            args, kwargs = parse_input(args_text, kwargs_text)
        except UsageError as exc:
            self.show(RunUpdate(error_line(exc), error=True))
            return
        self.app.last_run = (socket, args_text, kwargs_text)  # type: ignore[attr-defined]
        self.show(RunUpdate(f"sending to {socket}: args {_short(args)} kwargs {_short(kwargs)}"))
        self.call(socket, args, kwargs)

    @work(thread=True, exclusive=True, group="run")
    def call(self, socket: str, args: list[Any], kwargs: dict[str, Any]) -> None:
        from textual.worker import get_current_worker

        from ..calls import Client
        from ..errors import CallTimeout
        from ..output import result_text
        from ..store.models import db

        worker = get_current_worker()
        client = None
        try:
            client = Client(self.app.config)  # type: ignore[attr-defined]
            cid = client.submit(socket, [(args, kwargs)])[0]
            self.call_id = cid
            self.post_message(RunUpdate(f"call {cid} sent; waiting for its result (Esc closes, the call goes on)"))
            outcome = None
            while outcome is None and not worker.is_cancelled:
                try:
                    outcome = client.wait([cid], WAIT_SLICE)[cid]
                except CallTimeout:
                    continue
            if outcome is None:
                return
            if not outcome.ok:
                self.post_message(RunUpdate(outcome.error_line(), error=True))
                return
            value = outcome.result
            text = value.decode("utf-8", "replace") if isinstance(value, bytes) else result_text(value)
            if len(text) > SHOWN_CHARS:
                text = text[:SHOWN_CHARS] + f"\n... ({len(text) - SHOWN_CHARS} more characters: ec result {cid})"
            took = "attempt" if outcome.attempts == 1 else "attempts"
            self.post_message(RunUpdate(f"call {cid} done ({outcome.attempts} {took})", result=text))
        except Exception as exc:  # noqa: BLE001 - a denied action or bad input is shown, never raised
            self.post_message(RunUpdate(error_line(exc), error=True))
        finally:
            if client is not None:
                try:
                    client.close()
                except Exception:  # noqa: BLE001
                    pass
            if db.obj is not None:
                db.close()

    def on_run_update(self, message: RunUpdate) -> None:
        self.show(message)

    def show(self, update: RunUpdate) -> None:
        self.query_one("#run-status", Static).update(Text(update.status, style="bold red" if update.error else ""))
        if update.result is not None:
            self.query_one("#run-result", Static).update(Text(update.result))


def _short(value: Any, limit: int = 60) -> str:
    from ..output import dumps

    text = dumps(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."
