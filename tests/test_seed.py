"""The seed (tests/seed/overview.rst, a copy of the product description) runs as written:
its Python workflow example and its CLI lines, verbatim, on an agent serving the sample
processor; ``pyfi`` is the seed's name for ``ec`` (a shell function here)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ectool.calls import broker_queue
from helpers import SAMPLE, agent, ec, env_for, make_repo, sample_network, workers

SEED = Path(__file__).parent / "seed" / "overview.rst"
SEED_REPO = "https://github.com/radiantone/pyfi-processors"
#: what the seed's Python example prints: each step's result prepended to the next step's
#: arguments, a parallel's results as a list in member order
FUNNEL = ("FUNNEL:  do_something([do_something(Eight), [do_something([do_something(do_something("
          "do_something(One), Two), Four), do_something(do_something(do_something(One), Two), Five)], Three), "
          "do_something(Six), do_something(Seven)], do_something(Nine)], Four)\n")


def code_blocks(language: str) -> list[str]:
    """The seed's ``.. code-block:: LANGUAGE`` bodies, dedented, in order."""
    blocks, lines = [], SEED.read_text().splitlines()
    for i, line in enumerate(lines):
        if line.strip() == f".. code-block:: {language}":
            body = []
            for more in lines[i + 1:]:
                if more.strip() and not more.startswith(" "):
                    break
                body.append(more)
            text = textwrap.dedent("\n".join(body))
            blocks.append("\n".join(b for b in text.splitlines() if not b.startswith(":caption:")).strip() + "\n")
    return blocks


def test_the_seed_is_the_product_description():
    """The copy under tests/seed holds the three example blocks this file runs."""
    assert len(code_blocks("python")) == 1 and len(code_blocks("bash")) == 3
    assert "from pyfi.client.api import parallel, pipeline, funnel" in code_blocks("python")[0]


@pytest.mark.parametrize("first", ["processor", "client"])
def test_pyfi_client_imports_beside_a_processors_pyfi_package(first):
    """`pyfi` is a namespace package: ElasticCode's pyfi.client and a processor's
    pyfi.processors import side by side, whichever comes first."""
    imports = ["import pyfi.processors.sample", "import pyfi.client.api, pyfi.client.example.api"]
    script = "\n".join([f"import sys; sys.path.insert(0, {str(SAMPLE)!r})",
                        *(imports if first == "processor" else imports[::-1]),
                        "import ectool.api",
                        "assert pyfi.client.api.parallel is ectool.api.parallel",
                        "member = pyfi.client.example.api.do_something_p('x').plan()",
                        "print(member['socket'], pyfi.processors.sample.do_something('x'))"])
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout) == (0, "pyfi.processors.sample.do_something do_something(x)\n"), \
        done.stderr


def test_a_worker_runs_a_processor_that_imports_the_client_api(tmp_path):
    """In a worker running the processor's module in-process, pyfi.processors (the
    processor's) and pyfi.client (ElasticCode's) import together."""
    broker = f"sqlite:///{tmp_path / 'queue.db'}"
    with sample_network(tmp_path, broker, sockets={"client_api": ("client_api", {}),
                                                   "do_something": ("do_something", {})}) as (env, proc):
        with workers(env, proc):
            done = ec("run", "client_api", "--timeout", "60", env=env)
            assert (done.returncode, done.stdout) == (0, "ectool.api\n"), done.stderr
            done = ec("run", "do_something", "x", "--timeout", "60", env=env)
            assert (done.returncode, done.stdout) == (0, "do_something(x)\n"), done.stderr


@pytest.fixture
def seed_env(tmp_path, broker_url):
    """An environment where the seed's repository URL resolves to the sample processor's
    repository (git's url.<base>.insteadOf), `ec` is on PATH and the URL is trusted."""
    repo = make_repo(tmp_path / "pyfi-processors")
    gitconfig = tmp_path / "gitconfig"
    gitconfig.write_text(f'[url "file://{repo}"]\n\tinsteadOf = {SEED_REPO}\n')
    env = env_for(f"sqlite:///{tmp_path / 'ec.db'}", broker_url, GIT_CONFIG_GLOBAL=str(gitconfig),
                  EC_AGENT_STALE="5")
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env["PATH"]
    trusted = ec("trust", "add", "https://github.com/radiantone/*", env=env)
    assert trusted.returncode == 0, trusted.stderr
    work = tmp_path / "cwd"
    work.mkdir()
    yield env, work
    if broker_url.startswith("amqp"):
        from ectool.transport import connect

        with connect(broker_url) as t:
            for task in ("do_something", "do_this"):
                t.delete_queue(broker_queue(f"pyfi.processors.sample.{task}", env["EC_NAMESPACE"]))


def bash(script: str, env: dict, cwd: Path) -> subprocess.CompletedProcess:
    """Run the seed's lines in bash, `pyfi` being `ec` (aliases on, as in a shell)."""
    prelude = 'shopt -s expand_aliases\npyfi() { ec "$@"; }\nset -e\n'
    return subprocess.run(["bash", "-c", prelude + script], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=240)


def test_the_seeds_cli_lines_and_python_example_run_verbatim(seed_env):
    env, cwd = seed_env
    build, pipes, graph = code_blocks("bash")
    with agent(env, "--cpus", "2"):
        built = bash(build, env, cwd)
        assert (built.returncode, built.stdout) == (0, "do_something(some data)\n"), built.stderr
        piped = bash(pipes, env, cwd)
        assert piped.returncode == 0, piped.stderr
        assert sorted(piped.stdout.splitlines()) == sorted([
            "do_something(HI THERE!)",
            "do_this(do_something(HI THERE!) add some text)",
            "HI THERE!", "do_something(HI THERE!)", "do_this(HI THERE!)"])
        (cwd / "example.py").write_text(code_blocks("python")[0])
        started = ec("ls", "calls", "--json", "--limit", "1000", env=env)
        before = {c["id"] for c in json.loads(started.stdout)}
        example = subprocess.run([sys.executable, "example.py"], env=env, cwd=cwd, capture_output=True, text=True,
                                 timeout=240)
        assert example.returncode == 0, example.stderr
        assert example.stdout == FUNNEL, example.stdout
        # the seed's call graph command, on the id of the funnel just run
        calls = json.loads(ec("ls", "calls", "--json", "--limit", "1000", env=env).stdout)
        roots = [c for c in calls if c["id"] not in before and not c.get("parent")]
        assert len(roots) == 1, roots
        command = re.sub(r"--id \S+", f"--id {roots[0]['id']}", graph.splitlines()[0].removeprefix("$ "))
        shown = bash(command, env, cwd)
        assert shown.returncode == 0, shown.stderr
        assert shown.stdout.startswith("funnel [done") and roots[0]["id"] in shown.stdout.splitlines()[0]
        assert shown.stdout.count("pyfi.processors.sample.do_something [done") == 10  # One ... Nine, Four
