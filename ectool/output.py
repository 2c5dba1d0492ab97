"""One output path for rows: a rich table on a tty, tab-separated text when piped, JSON on
request. Commands hand their rows here instead of printing themselves."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Sequence
from typing import Any


def use_color() -> bool:
    """Colour and tables only on a tty and when NO_COLOR is unset."""
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR")


def dumps(value: Any) -> str:
    """JSON for stdout; a lone surrogate in a string stays its escape (valid UTF-8 out)."""
    from .worker.shim import json_text

    return json_text(json.dumps(value, ensure_ascii=False, default=str))


def cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list | dict):
        return dumps(value) if isinstance(value, dict) else ",".join(map(str, value))
    return str(value)


def render(rows: Sequence[dict[str, Any]], columns: Iterable[str] | None = None, *,
           as_json: bool = False, title: str | None = None) -> None:
    """Print ``rows``: JSON array with ``as_json``, a table on a tty, else TSV with a header."""
    if as_json:
        sys.stdout.write(dumps(list(rows)) + "\n")
        return
    cols = list(columns) if columns else (list(rows[0]) if rows else [])
    if use_color():
        from rich.console import Console
        from rich.table import Table

        table = Table(title=title, header_style="bold")
        for col in cols:
            table.add_column(col)
        for row in rows:
            table.add_row(*(cell(row.get(c)) for c in cols))
        Console().print(table)
        return
    out = sys.stdout
    if cols:
        out.write("\t".join(cols) + "\n")
    for row in rows:
        out.write("\t".join(cell(row.get(c)).replace("\t", " ").replace("\n", " ") for c in cols) + "\n")


def render_one(row: dict[str, Any], *, as_json: bool = False) -> None:
    """Print one object: JSON, or ``key: value`` lines."""
    if as_json:
        sys.stdout.write(dumps(row) + "\n")
        return
    width = max((len(k) for k in row), default=0)
    for key, value in row.items():
        sys.stdout.write(f"{key.ljust(width)}  {cell(value)}\n")


def result_text(value: Any) -> str:
    """A call result for stdout: a string as text, anything else as JSON."""
    return value if isinstance(value, str) else dumps(value)


def text_bytes(text: str) -> bytes:
    """``text`` for a byte stream: UTF-8, where a lone surrogate from U+DC80 to U+DCFF is
    the byte it stands for (surrogateescape: a non-UTF-8 line or file name comes back as
    it was) and any other lone surrogate, which stands for nothing, is U+FFFD."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        import re

        return re.sub("[\ud800-\udc7f\udd00-\udfff]", "\ufffd", text).encode("utf-8", "surrogateescape")
