"""The demo: build the seed's network on the sample processor, run calls, show results.

It works on whatever store and broker are configured (the embedded default after
``./install.sh``). When no agent is online it starts one (``ec agent run``, which deploys
the sample processor from its git repository and runs its workers) and stops it by pid
when it is done, even on failure, unless asked to keep it.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from . import network, paths
from .config import Config
from .errors import UsageError
from .store.models import Agent, Processor, Queue, Socket, now

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
    # install.sh copies it under the real XDG data dir, which EC_HOME does not move
    installed = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local/share") / "elasticcode"
    for candidate in (os.environ.get("EC_SAMPLE_SRC"), here, paths.data_dir() / "examples" / "sample",
                      installed / "examples" / "sample"):
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


def build_network(repo_url: str, log, workers: int = 2) -> None:
    """The seed's `add queue / add processor / add socket` sequence, idempotently."""
    if not network.is_trusted(repo_url):
        network.add_trust(repo_url)
        log(f"$ ec trust add {repo_url}")
    if Queue.get_or_none(Queue.name == QUEUE) is None:
        network.add_queue(QUEUE, "direct")
        log(f"$ ec add queue -n {QUEUE} -t direct")
    proc = Processor.get_or_none(Processor.name == PROCESSOR)
    if proc is None:
        network.add_processor(PROCESSOR, repo_url, MODULE, concurrency=workers)
        log(f"$ ec add processor -n {PROCESSOR} -g {repo_url} -m {MODULE} -c {workers}")
    else:
        changes = {k: str(v) for k, v in (("gitrepo", repo_url), ("concurrency", workers))
                   if getattr(proc, k) != v}
        if proc.requested_status != "running":
            network.request_status(PROCESSOR, "start")
        if changes:
            network.update("processor", PROCESSOR, changes)
    for name, (task, conc) in SOCKETS.items():
        if Socket.get_or_none(Socket.name == name) is None:
            network.add_socket(name, QUEUE, PROCESSOR, task, concurrency=conc)
            log(f"$ ec add socket -n {name} -q {QUEUE} -pn {PROCESSOR} -t {task} -c {conc}")


def agent_online() -> Agent | None:
    """An agent with a fresh heartbeat, if any."""
    from .liveness import agent_stale

    cutoff = now() - dt.timedelta(seconds=agent_stale())
    return Agent.select().where((Agent.status == "online") & (Agent.heartbeat >= cutoff)).first()


def wait_running(timeout: float = 300) -> None:
    """Wait until an agent reports the demo processor running; UsageError on error/timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        p = Processor.get(Processor.name == PROCESSOR)
        if p.status == "running":
            return
        if p.status == "error":
            raise UsageError(f"processor {PROCESSOR} failed to deploy: {p.status_reason}")
        time.sleep(0.2)
    raise UsageError(f"processor {PROCESSOR} was not running after {timeout:g}s (ec ls processors)")


def start_agent(env: dict, workers: int) -> subprocess.Popen:
    logfile = paths.data_dir() / "demo" / "agent.log"
    logfile.parent.mkdir(parents=True, exist_ok=True)
    with open(logfile, "ab") as err:
        return subprocess.Popen([sys.executable, "-m", "ectool", "agent", "run", "--cpus", str(workers),
                                 "--interval", "1"], env=env, stdout=subprocess.DEVNULL, stderr=err,
                                start_new_session=True)


def stop_agent(agent: subprocess.Popen) -> None:
    """SIGTERM the agent we started (it drains and stops its workers); SIGKILL if it hangs."""
    if agent.poll() is None:
        agent.send_signal(signal.SIGTERM)
    try:
        agent.wait(60)
    except subprocess.TimeoutExpired:
        agent.kill()
        agent.wait()


def run_workflow(config: Config, log) -> str:
    """The seed's pipeline/parallel/funnel example through :mod:`ectool.api`; its id."""
    from . import api

    saved = {k: os.environ.get(k) for k in ("EC_DB", "EC_BROKER")}
    os.environ.update(EC_DB=config.db, EC_BROKER=config.broker)
    try:
        from .api import Socket as ApiSocket
        from .api import funnel, parallel, pipeline

        do_something = ApiSocket(name="pyfi.processors.sample.do_something").p
        _pipeline = pipeline([
            do_something("One"),
            do_something("Two"),
            parallel([
                do_something("Four"),
                do_something("Five"),
            ]),
            do_something("Three")])
        _parallel = parallel([
            _pipeline,
            do_something("Six"),
            do_something("Seven")])
        _funnel = funnel([
            do_something("Eight"),
            _parallel,
            do_something("Nine")])
        handle = _funnel(do_something("Four"))
        print("FUNNEL: ", handle.get(timeout=180), flush=True)
        return handle.id
    finally:
        api.close()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


WORKFLOW_SOURCE = """\
from ectool.api import Socket, parallel, pipeline, funnel
do_something = Socket(name="pyfi.processors.sample.do_something").p
_pipeline = pipeline([do_something("One"), do_something("Two"),
                      parallel([do_something("Four"), do_something("Five")]), do_something("Three")])
_parallel = parallel([_pipeline, do_something("Six"), do_something("Seven")])
_funnel = funnel([do_something("Eight"), _parallel, do_something("Nine")])
print("FUNNEL: ", _funnel(do_something("Four")).get())"""


def run_demo(config: Config, workers: int = 2, log=None, keep: bool = False) -> int:
    """Build, start an agent if none is online, run :data:`STEPS` in bash and the seed's
    workflow, show its call graph, stop what it started; return the number of failures."""
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    repo = sample_repo()
    url = f"file://{repo}"
    build_network(url, log, workers)
    env = dict(os.environ, EC_DB=config.db, EC_BROKER=config.broker)
    env.pop("EC_FLOW", None)
    ec_bin = shutil.which("ec") or str(Path(sys.executable).with_name("ec"))
    bindir = str(Path(ec_bin).parent)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    agent = None
    running = agent_online()
    if running is None:
        # no agent is online, so nothing runs the processor whatever its last status said
        Processor.update(status="pending", status_reason=None).where(Processor.name == PROCESSOR).execute()
        log(f"$ ec agent run --cpus {workers} &   # deploys {PROCESSOR} from git, runs {workers} worker(s)")
        agent = start_agent(env, workers)
    else:
        log(f"# agent {running.name} (pid {running.pid}) is online: it runs {PROCESSOR}")
    failures = 0
    try:
        wait_running()
        for title, command in STEPS:
            log(f"\n# {title}\n$ {command}")
            done = subprocess.run(["bash", "-c", command], env=env, timeout=120)
            failures += done.returncode != 0
        log("\n# The seed's workflow: pipeline, parallel and funnel, through the Python API (ectool.api)\n"
            + "\n".join(">>> " + line for line in WORKFLOW_SOURCE.splitlines()))
        try:
            wf = run_workflow(config, log)
        except Exception as exc:  # noqa: BLE001 - report and go on to clean up
            log(f"ec: the workflow failed: {exc}")
            failures += 1
        else:
            log(f"\n# Its call graph\n$ ec ls call --id {wf} -g")
            failures += subprocess.run(["bash", "-c", f"ec ls call --id {wf} -g"], env=env,
                                       timeout=60).returncode != 0
        log("\n# Recent calls\n$ ec ls calls --limit 3")
        subprocess.run(["bash", "-c", "ec ls calls --limit 3"], env=env, timeout=60)
    finally:
        if agent is not None and not keep:
            log(f"\n$ kill {agent.pid}   # stop the agent the demo started (and its workers)")
            stop_agent(agent)
    log(f"\nDemo {'finished' if not failures else f'had {failures} failing step(s)'}.")
    log(f"What happened: {PROCESSOR}'s functions, committed to a git repository, were deployed by an agent "
        "into a virtualenv and run by its workers; every call above was stored and queued durably.")
    log("Shell pipes, tee fan-out, ec map and the Python workflow all made calls to the same sockets; "
        "the call graph shows how the funnel's members ran in parallel.")
    log("Try next: ec ls processors; ec ls calls; ec logs ID; eval \"$(ec shell aliases)\"; ec dash; man ec"
        + (f"; the agent keeps running (kill {agent.pid})" if agent is not None and keep else ""))
    return failures
