"""A DataTable that redraws from rows while keeping the cursor on the same key."""

from __future__ import annotations

from collections.abc import Sequence

from textual.coordinate import Coordinate
from textual.widgets import DataTable


class KeyedTable(DataTable):
    """Columns fixed at construction; :meth:`show` replaces the rows, cursor kept by key."""

    COLUMNS: Sequence[str] = ()

    def __init__(self, **kwargs) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)

    def on_mount(self) -> None:
        self.add_columns(*self.COLUMNS)

    @property
    def current_key(self) -> str | None:
        if not self.row_count:
            return None
        row_key, _ = self.coordinate_to_cell_key(Coordinate(self.cursor_row, 0))
        return row_key.value

    def replace(self, rows: list[tuple[str, tuple]]) -> None:
        """``rows``: (key, cells) in order."""
        keep = self.current_key
        self.clear()
        for key, cells in rows:
            self.add_row(*cells, key=key)
        if keep is not None:
            try:
                self.move_cursor(row=self.get_row_index(keep))
            except Exception:  # noqa: BLE001 - that row is gone
                pass
