"""``ec worker``: run worker processes for a processor's sockets."""

from __future__ import annotations

import os
import sys

import click

from .env import Env
from .group import pass_env


@click.command()
@click.option("-p", "--processor", required=True, help="Processor whose sockets to serve.")
@click.option("-s", "--socket", "sockets", multiple=True, help="Serve only this socket (repeatable).")
@click.option("-c", "--concurrency", default=1, show_default=True, type=int,
              help="Worker processes (one call at a time each).")
@click.option("--path", type=click.Path(file_okay=False), help="Import the module from this directory "
              "(default: the processor's repository when it is a local path).")
@click.option("--prefetch", type=int, help="Deliveries each process takes at a time (default 1; a delivery may be a bundle of calls).")
@click.option("--grace", default=30.0, show_default=True, type=float, help="Seconds to let in-flight calls finish on stop.")
@click.option("--python", "python", type=click.Path(dir_okay=False),
              help="Run calls isolated in a child process of this (virtualenv) python.")
@click.option("--memory-limit", type=click.IntRange(min=16), envvar="EC_MEMORY_LIMIT", metavar="MIB",
              help="Cap each call's process at MIB MiB of address space (env EC_MEMORY_LIMIT): a task "
              "that allocates past it fails with MemoryError instead of exhausting the host. Calls then "
              "run in a child process.")
@click.option("--commit", hidden=True)
@click.option("--child", is_flag=True, hidden=True)
@pass_env
def worker(env: Env, processor, sockets, concurrency, path, prefetch, grace, python, memory_limit, commit,
           child) -> None:
    """Run worker processes serving PROCESSOR's sockets until SIGTERM.

    In-flight calls finish on SIGTERM; deliveries not yet started go back to their queue.
    A worker process that dies is restarted with backoff.
    """
    cfg = env.config
    if concurrency < 1:
        raise click.BadParameter("must be >= 1", param_hint="--concurrency")
    if child:
        from ..worker.runtime import WorkerRuntime

        WorkerRuntime(cfg, processor, list(sockets), path, prefetch, python, commit, memory_limit).run()
        return
    # validate once in the parent so a typo fails fast with one line
    env.store()
    from .. import network

    proc = network.get("processor", processor)
    for s in sockets:
        network.get("socket", s)
    _ = proc
    from ..supervise import Supervisor

    argv = [sys.executable, "-m", "ectool", "worker", "-p", processor, "--child"]
    for s in sockets:
        argv += ["-s", s]
    if path:
        argv += ["--path", os.path.abspath(path)]
    if prefetch:
        argv += ["--prefetch", str(prefetch)]
    if python:
        argv += ["--python", os.path.abspath(python)]
    if memory_limit:
        argv += ["--memory-limit", str(memory_limit)]
    child_env = dict(os.environ, EC_DB=cfg.db, EC_BROKER=cfg.broker)
    sys.exit(Supervisor(argv, concurrency, env=child_env, grace=grace).run())
