"""systemd's notify protocol (sd_notify) over $NOTIFY_SOCKET, without libsystemd."""

from __future__ import annotations

import os
import socket


def notify(message: str) -> bool:
    """Send e.g. ``READY=1`` / ``STATUS=...`` / ``WATCHDOG=1`` / ``STOPPING=1``; False if not under systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(message.encode(), address)
        return True
    except OSError:
        return False


def watchdog_interval() -> float | None:
    """Half of systemd's WatchdogSec, in seconds, when the watchdog is on for this process."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2_000_000
