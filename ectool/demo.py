"""The demo: build the seed's network on the sample processor, run calls, show results.

It works on whatever store and broker are configured (the embedded default after
``./install.sh``), starts its own worker processes (standing in for an agent) and stops
them by pid when it is done, even on failure.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from . import network, paths
from .config import Config
from .errors import UsageError
from .store.models import Processor, Queue, Socket

QUEUE = "pyfi.queue1"
PROCESSOR = "proc1"
MODULE = "pyfi.processors.sample"
SOCKETS = {  # socket name -> (function, concurrency)
    "pyfi.processors.sample.do_something": ("do_something", 5),
    "pyfi.processors.sample.do_this": ("do_this", 8),
    "pyfi.processors.sample.add_two": ("add_two", 2),
}
STEPS = [
    ("Pipe some output from stdin to a task",
     'echo "HI THERE!" | ec run pyfi.processors.sample.do_something'),
    ("The seed's spelling",
     "ec task run --socket pyfi.processors.sample.do_something --data \"['some data']\""),
    ("A pipeline in bash: a task, then text appended, then another task",
     'echo "HI THERE!" | ec run pyfi.processors.sample.do_something | echo "$(cat -) add some text"'
     " | ec run pyfi.processors.sample.do_this"),
    ("Fan-out with tee: two tasks run in parallel on the same input",
     'echo "HI THERE!" | tee >(ec run pyfi.processors.sample.do_something) '
     "| ec run pyfi.processors.sample.do_this; wait $!"),
    ("One call per line, results in input order",
     "seq 5 | ec map pyfi.processors.sample.do_this"),
    ("JSON arguments",
     "ec run pyfi.processors.sample.add_two 3 10"),
    ("A shell flow: a pipeline and a fan-out recorded as one call graph",
     'eval "$(ec flow begin --label demo)"; '
     'echo "HI THERE!" | ec run pyfi.processors.sample.do_something | ec run pyfi.processors.sample.do_this; '
     '{ echo "HI THERE!" | tee >(ec run pyfi.processors.sample.do_something) '
     '>(ec run pyfi.processors.sample.do_this) >/dev/null; } | cat; '
     'ec ls call --id "$EC_FLOW" -g; eval "$(ec flow end)"'),
]


def sample_source() -> Path:
    """The sample processor's source: the checkout's examples/, or the installed copy."""
    here = Path(__file__).resolve().parents[1] / "examples" / "sample"
    for candidate in (os.environ.get("EC_SAMPLE_SRC"), here, paths.data_dir() / "examples" / "sample"):
        if candidate and (Path(candidate) / "pyfi" / "processors" / "sample.py").exists():
            return Path(candidate)
    raise UsageError("cannot find the sample processor (examples/sample); re-run ./install.sh")


def sample_repo() -> Path:
    """A git repository holding the sample processor (created, or updated with a new commit)."""
    import git

    src = sample_source()
    repo_dir = paths.data_dir() / "demo" / "sample-repo"
    if not (repo_dir / ".git").exists():
        repo_dir.mkdir(parents=True, exist_ok=True)
        repo = git.Repo.init(repo_dir, initial_branch="main")
    else:
        repo = git.Repo(repo_dir)
    shutil.copytree(src, repo_dir, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    repo.git.add(A=True)
    if repo.is_dirty(index=True, untracked_files=True) or not repo.head.is_valid():
        with repo.config_writer() as cw:
            cw.set_value("user", "name", "ElasticCode demo")
            cw.set_value("user", "email", "demo@elasticcode.invalid")
        repo.index.commit("sample processor")
    return repo_dir


def build_network(repo_url: str, log) -> None:
    """The seed's `add queue / add processor / add socket` sequence, idempotently."""
    if not network.is_trusted(repo_url):
        network.add_trust(repo_url)
        log(f"$ ec trust add {repo_url}")
    if Queue.get_or_none(Queue.name == QUEUE) is None:
        network.add_queue(QUEUE, "direct")
        log(f"$ ec add queue -n {QUEUE} -t direct")
    proc = Processor.get_or_none(Processor.name == PROCESSOR)
    if proc is None:
        network.add_processor(PROCESSOR, repo_url, MODULE)
        log(f"$ ec add processor -n {PROCESSOR} -g {repo_url} -m {MODULE}")
    elif proc.gitrepo != repo_url:
        network.update("processor", PROCESSOR, {"gitrepo": repo_url})
    for name, (task, conc) in SOCKETS.items():
        if Socket.get_or_none(Socket.name == name) is None:
            network.add_socket(name, QUEUE, PROCESSOR, task, concurrency=conc)
            log(f"$ ec add socket -n {name} -q {QUEUE} -pn {PROCESSOR} -t {task} -c {conc}")


def run_demo(config: Config, workers: int = 2, log=None) -> int:
    """Build, start workers, run :data:`STEPS` in bash, stop workers; return failures."""
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    repo = sample_repo()
    url = f"file://{repo}"
    build_network(url, log)
    env = dict(os.environ, EC_DB=config.db, EC_BROKER=config.broker)
    ec_bin = shutil.which("ec") or str(Path(sys.executable).with_name("ec"))
    bindir = str(Path(ec_bin).parent)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    log(f"$ ec worker -p {PROCESSOR} -c {workers} &   # an agent does this on a real network")
    worker = subprocess.Popen([sys.executable, "-m", "ectool", "worker", "-p", PROCESSOR, "-c", str(workers)],
                              env=env, stderr=subprocess.DEVNULL)
    failures = 0
    try:
        for title, command in STEPS:
            log(f"\n# {title}\n$ {command}")
            done = subprocess.run(["bash", "-c", command], env=env, timeout=120)
            failures += done.returncode != 0
        log("\n# Recent calls\n$ ec ls calls --limit 3")
        subprocess.run(["bash", "-c", "ec ls calls --limit 3"], env=env, timeout=60)
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
    log(f"\nDemo {'finished' if not failures else f'had {failures} failing step(s)'}. Next: "
        "ec ls processors; ec ls calls; man ec")
    return failures
