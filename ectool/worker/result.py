"""What happened when one call ran (:class:`Result`), and recording a batch of them so a
store that refuses one outcome's content cannot kill the worker (:func:`record_or_refuse`)."""

from __future__ import annotations

import datetime as dt
import logging
import re
from dataclasses import dataclass

from peewee import DataError, IntegrityError

from ..messages import CallMessage
from ..store.ledger import record_outcomes

log = logging.getLogger("ec.worker")


@dataclass
class Result:
    """What happened when one call ran."""

    msg: CallMessage
    status: str  # done | retrying | failed
    result_json: str | None = None
    error_type: str | None = None
    error_message: str | None = None
    traceback: str | None = None
    retry_delay: float = 0.0
    ms: float | None = None  # how long the call ran
    log: str | None = None  # what the call printed
    started: dt.datetime | None = None  # when this call (not its batch) started and ended
    finished: dt.datetime | None = None
    ran_at: tuple[str, str | None, str] | None = None  # (processor, commit, runtime) when pinned elsewhere

    def __post_init__(self) -> None:
        # what a task prints or raises is anybody's text: PostgreSQL's text type cannot
        # hold NUL, and neither store takes a lone surrogate (no UTF-8 form); recording
        # either failed every attempt (the worker died, the call ended dead). Both are
        # stored as U+FFFD instead, on every store alike.
        self.error_type, self.error_message, self.traceback, self.log = (
            storable_text(v) for v in (self.error_type, self.error_message, self.traceback, self.log))
        if self.error_type and len(self.error_type) > 255:  # its column is a varchar(255)
            self.error_type = self.error_type[:255]


_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def storable_text(text: str | None) -> str | None:
    """``text`` with NUL and lone surrogates as U+FFFD (the common case costs one scan)."""
    if not text:
        return text
    if "\x00" not in text:
        try:
            text.encode()
            return text
        except UnicodeEncodeError:
            pass
    return _UNSTORABLE.sub("\ufffd", text)


#: what a store raises for content it will not hold (a bad value, not an outage)
REFUSED = (DataError, IntegrityError, ValueError)


def record_or_refuse(results: list[Result]) -> None:
    """:func:`record_outcomes`, and if the store refuses the batch's content, each outcome
    on its own; one it still refuses is recorded as ``failed`` (``RecordFailed``, with the
    store's reason, without result or log) in its place. Otherwise the worker would die
    on it, the call run again, and again, until it ended dead for the wrong reason."""
    try:
        record_outcomes(results)
    except REFUSED as exc:
        if len(results) > 1:
            for r in results:
                record_or_refuse([r])
        else:
            _refused(results[0], exc)
            record_outcomes(results)


def _refused(r: Result, exc: BaseException) -> None:
    log.warning("the store refused the outcome of call %s: %s", r.msg.id, exc)
    r.status, r.result_json, r.traceback, r.log, r.retry_delay = "failed", None, None, None, 0.0
    r.error_type = "RecordFailed"
    r.error_message = storable_text(f"the store refused this call's outcome: {type(exc).__name__}: {exc}"[:1000])
