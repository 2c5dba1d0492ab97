"""Wake-ups between processes on one host, over Linux abstract unix datagram sockets.

The embedded transport uses them so idle consumers and waiting clients sleep in
``select`` instead of polling SQLite: a publisher sends one small datagram to each
registered consumer after its commit. Losing a wake-up is harmless (a slow fallback poll
covers it), so every send is best-effort and never blocks.
"""

from __future__ import annotations

import os
import select
import socket
import time
import uuid

POLL = 1.0  # the slow fallback poll (and the embedded transport's dead-owner sweep), seconds


class Waker:
    """A receiving socket with a unique abstract address (``@ec-<hex>``)."""

    def __init__(self, prefix: str = "ec") -> None:
        self.address = f"{prefix}-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + self.address)
        self.sock.setblocking(False)

    def wait(self, timeout: float | None) -> list[bytes]:
        """Sleep until a datagram arrives or ``timeout``; return every datagram pending."""
        ready, _, _ = select.select([self.sock], [], [], timeout)
        if not ready:
            return []
        return self.drain()

    def drain(self) -> list[bytes]:
        out = []
        while True:
            try:
                out.append(self.sock.recv(1 << 20))
            except (BlockingIOError, InterruptedError):
                return out

    def close(self) -> None:
        self.sock.close()


_sender: socket.socket | None = None


def send(address: str, payload: bytes = b"w", wait: float = 0.0) -> bool:
    """Send one datagram to ``address``; False if nobody listens there.

    A full receiver queue is retried for up to ``wait`` seconds, then given up (the
    receiver is alive; its fallback poll covers the loss).
    """
    global _sender
    if _sender is None:
        _sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        _sender.setblocking(False)
    deadline = time.monotonic() + wait
    while True:
        try:
            _sender.sendto(payload, "\0" + address)
            return True
        except (ConnectionRefusedError, FileNotFoundError):
            return False
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return True
            time.sleep(0.001)
        except OSError:
            return True  # payload too big for a datagram: the receiver reads the store
