"""``ec dash``: the live dashboard (Textual).

Only this package imports Textual, and only :func:`make_app` imports it here, so the rest
of ``ec`` starts without it. One widget per module; styles in ``dash.tcss``; data is read
in worker threads (:mod:`.data`) and arrives as messages (:mod:`.messages`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..config import Config
    from .app import DashApp


def make_app(config: Config, *, refresh: float = 2.0, follow: bool = True, source: Any = None) -> DashApp:
    """The dashboard app over ``config``'s store and broker; ``refresh`` seconds between
    reads of the store, ``follow`` the event stream for liveness (used by the CLI and tests);
    ``source`` replaces the store as the source of the views (see :mod:`.app`)."""
    from .app import DashApp

    return DashApp(config, refresh=refresh, follow=follow, source=source)
