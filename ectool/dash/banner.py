"""A banner that says what is unreachable (hidden while everything is fine)."""

from __future__ import annotations

from textual.widgets import Static


class Banner(Static):
    def __init__(self) -> None:
        super().__init__("", id="banner")
        self.problems: dict[str, str] = {}
        self.display = False

    def set_problem(self, source: str, text: str | None) -> None:
        if text is None:
            self.problems.pop(source, None)
        else:
            self.problems[source] = text
        self.update("  ".join(t if s == "access" else f"{s} unreachable: {t} (retrying)"
                              for s, t in self.problems.items()))
        self.display = bool(self.problems)
