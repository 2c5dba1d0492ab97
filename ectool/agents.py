"""Talking to agents: their control queues, and waking them after a change."""

from __future__ import annotations

import logging

from .config import Config

log = logging.getLogger("ec.agents")


def control_queue(agent: str, namespace: str = "") -> str:
    return f"ec.{namespace}.agent.{agent}" if namespace else f"ec.agent.{agent}"


def notify_agents(config: Config) -> int:
    """Ask every online agent to reconcile now (best-effort); returns how many were told."""
    from .store.models import Agent

    names = [a.name for a in Agent.select(Agent.name).where(Agent.status == "online")]
    if not names:
        return 0
    from .transport import open_transport

    told = 0
    try:
        with open_transport(config) as t:
            for name in names:
                try:
                    t.publish(control_queue(name, config.namespace), [b"reconcile"])
                    told += 1
                except Exception:  # noqa: BLE001 - the periodic reconcile covers a missed wake-up
                    log.debug("could not notify agent %s", name, exc_info=True)
    except Exception:  # noqa: BLE001
        log.debug("could not reach the broker to notify agents", exc_info=True)
    return told
