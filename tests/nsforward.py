"""A TCP forwarder from inside a network namespace to the root namespace's loopback.

    python tests/nsforward.py NETNS PORT [PORT ...]

Test hosts (tests/hosts.py) live in network namespaces, which cannot reach the root
namespace's 127.0.0.1 where PostgreSQL and RabbitMQ listen. This process bridges them
without giving any address outside the test's own namespaces: it enters NETNS (setns on
/var/run/netns/NETNS), opens its listening sockets there on every PORT (0.0.0.0 of that
namespace: only the addresses the harness gave it), returns to the namespace it started in
(a socket keeps the namespace it was made in) and connects each accepted connection to
127.0.0.1:PORT from there. Hosts reach it over their own veth link, so cutting that link is
a real partition: TCP stalls, heartbeats time out, nothing is refused or reset by us.

It prints ``ready`` once listening and runs until killed. One thread per direction of each
connection: the sockets' recv/send release the GIL, and the connections are few (a few per
worker and agent).
"""

from __future__ import annotations

import ctypes
import os
import socket
import sys
import threading

CLONE_NEWNET = 0x40000000


def setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def listen_in(netns: str, ports: list[int]) -> list[socket.socket]:
    """Listening sockets made inside NETNS; the calling thread is back home afterwards."""
    home = os.open("/proc/self/ns/net", os.O_RDONLY)
    target = os.open(f"/var/run/netns/{netns}", os.O_RDONLY)
    try:
        setns(target)
        try:
            socks = []
            for port in ports:
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(("0.0.0.0", port))
                s.listen(128)
                socks.append(s)
            return socks
        finally:
            setns(home)
    finally:
        os.close(home)
        os.close(target)


def pump(src: socket.socket, dst: socket.socket) -> None:
    """Copy SRC to DST until EOF or an error; then half-close (EOF) or close both."""
    try:
        while True:
            data = src.recv(262144)
            if not data:
                dst.shutdown(socket.SHUT_WR)
                return
            dst.sendall(data)
    except OSError:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def serve(listener: socket.socket, port: int) -> None:
    while True:
        down, _ = listener.accept()
        try:
            up = socket.create_connection(("127.0.0.1", port))
        except OSError:
            down.close()
            continue
        for s in (down, up):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        a = threading.Thread(target=pump, args=(down, up), daemon=True)
        b = threading.Thread(target=pump, args=(up, down), daemon=True)
        a.start()
        b.start()
        threading.Thread(target=_close_after, args=(a, b, down, up), daemon=True).start()


def _close_after(a: threading.Thread, b: threading.Thread, *socks: socket.socket) -> None:
    a.join()
    b.join()
    for s in socks:
        s.close()


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    netns, ports = argv[0], [int(p) for p in argv[1:]]
    listeners = listen_in(netns, ports)
    for listener, port in zip(listeners, ports, strict=True):
        threading.Thread(target=serve, args=(listener, port), daemon=True).start()
    print("ready", flush=True)
    threading.Event().wait()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
