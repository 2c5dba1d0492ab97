"""The shell toolkit end to end in real bash: flows over pipes and tee fan-out, socket
functions, completion of names from the store, and the recipes in shell/examples/."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from helpers import ROOT, build_network, ec, env_for, make_repo, workers

BIN = os.path.dirname(sys.executable)  # where `ec` is installed (the venv's bin)


def bash(script: str, env: dict, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", script], env=dict(env, PATH=f"{BIN}:{env['PATH']}"),
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def net(tmp_path):
    db_url = f"sqlite:///{tmp_path / 'ec.db'}"
    build_network(db_url, make_repo(tmp_path / "repo"))
    return env_for(db_url, f"sqlite:///{tmp_path / 'queue.db'}")


def test_flow_records_a_pipeline_and_tee_branches_as_one_graph(net, tmp_path):
    script = """
    set -euo pipefail
    eval "$(ec flow begin)"
    echo "FLOW $EC_FLOW" >&2
    echo "HI THERE!" | ec run do_something | ec run echo
    { echo "HI" | tee >(ec run do_something) >(ec run echo) >/dev/null; } | cat
    seq 2 | ec map echo
    ec run add_two 1 2
    ec ls call --id "$EC_FLOW" -g --json > "$GRAPH"
    eval "$(ec flow end)"
    echo "after: [${EC_FLOW:-}]"
    """
    graph_file = tmp_path / "graph.json"
    with workers(net, "sample", 2):
        done = bash(script, dict(net, GRAPH=str(graph_file)))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "do_something(HI THERE!)" and lines[-1] == "after: []"
    assert sorted(lines[1:3]) == ["HI", "do_something(HI)"] and lines[3:6] == ["1", "2", "3"]
    flow = done.stderr.split("FLOW ")[1].split()[0]
    root = json.loads(graph_file.read_text())
    assert (root["id"], root["socket"]) == (flow, "flow")
    kids = root["children"]
    assert sorted(k["socket"] for k in kids) == ["add_two", "do_something", "do_something", "echo", "echo", "echo"]
    piped = [k for k in kids if k["children"]]  # `ec run do_something | ec run echo`
    assert len(piped) == 1 and [c["socket"] for c in piped[0]["children"]] == ["echo"]
    assert piped[0]["children"][0]["result"] == "do_something(HI THERE!)"
    assert all(k["flow"] == flow and k["status"] == "done" for k in kids)
    listed = json.loads(ec("ls", "calls", "--flow", flow, "--json", env=net).stdout)
    assert len(listed) == 8  # the flow itself and its seven calls
    shown = json.loads(ec("show", "call", flow, "--json", env=net).stdout)
    assert shown["status"] == "done"


def test_flow_run_sets_the_flow_and_passes_the_exit_status(net):
    with workers(net, "sample"):
        ok = bash("ec flow run -- bash -c 'echo hi | ec run do_something; echo \"[$EC_FLOW]\"'", net)
        bad = bash("ec flow run -q -- bash -c 'ec run add_two 1 1; exit 3'", net)
    assert ok.returncode == 0, ok.stderr
    flow = ok.stderr.split("ec: flow ")[1].split()[0]
    assert ok.stdout == f"do_something(hi)\n[{flow}]\n"
    assert (bad.returncode, bad.stdout, bad.stderr) == (3, "2\n", "")
    graph = ec("flow", "show", "--id", flow, env=net).stdout.splitlines()
    assert graph[0].startswith("flow [done") and graph[1].strip().startswith("do_something [done")
    flows = json.loads(ec("ls", "calls", "--socket", "flow", "--json", env=net).stdout)
    assert sorted(f["status"] for f in flows) == ["done", "failed"]
    assert ec("flow", "end", env=net).returncode == 2  # no EC_FLOW: a usage error
    assert ec("run", "add_two", "1", "1", env=dict(net, EC_FLOW="nope")).returncode == 2


def test_socket_functions_and_completion_from_the_store(net):
    funcs = ec("shell", "aliases", "--shell", "bash", env=net).stdout
    assert 'type do_something >/dev/null 2>&1 || do_something() { ec run do_something "$@"; }' in funcs
    fish = ec("shell", "aliases", "--shell", "fish", env=net).stdout
    assert "function do_something --description 'ec run do_something'; ec run do_something $argv; end" in fish
    # the functions work, and a socket named like a builtin (echo) does not shadow it
    with workers(net, "sample"):
        done = bash(f'eval "$({BIN}/ec shell aliases --shell bash)"; echo "HI" | do_something; '
                    'add_two 2 3; type -t echo', net)
    assert done.stdout == "do_something(HI)\n5\nbuiltin\n", done.stderr

    def complete(words: str) -> list[str]:
        cword = len(words.split()) - (0 if words.endswith(" ") else 1)
        out = subprocess.run([f"{BIN}/ec"], env=dict(net, COMP_WORDS=words, COMP_CWORD=str(cword),
                             _EC_COMPLETE="bash_complete"), capture_output=True, text=True).stdout
        return [line.split(",", 1)[1] for line in out.splitlines() if line]

    assert complete("ec run do") == ["do_something"]
    assert complete("ec map b") == ["big", "boom"]
    assert complete("ec task run --socket ad") == ["add_two"]
    assert complete("ec show socket fl") == ["flaky"]
    assert complete("ec proc stop ") == ["sample"]
    assert complete("ec add socket -q ") == ["q"]
    assert complete("ec ls pro") == ["processors"]
    assert complete("ec --db sqlite:////nonexistent/x.db run ") == []  # and nothing is created
    # the installed bash script drives the same completion
    script = (f'source {ROOT}/shell/ec.bash; COMP_WORDS=(ec run do); COMP_CWORD=2; _ec_completion ec; '
              'printf "%s\\n" "${COMPREPLY[@]}"')
    assert bash(script, net).stdout == "do_something\n"


@pytest.mark.parametrize("shell_name, path", [("bash", "shell/ec.bash"), ("zsh", "shell/_ec"), ("fish", "shell/ec.fish")])
def test_checked_in_completion_scripts_are_current(shell_name, path):
    from click.testing import CliRunner

    from ectool.cli import cli

    generated = CliRunner().invoke(cli, ["shell", "completion", shell_name])
    assert generated.exit_code == 0
    assert generated.output == (ROOT / path).read_text(), f"regenerate: ec shell completion {shell_name} > {path}"


def test_shell_examples_run_against_a_real_worker(tmp_path):
    """shell/examples/*.sh as written, on the seed's network (built as `ec demo` builds it)."""
    from ectool import demo
    from ectool.store import open_store

    db_url = f"sqlite:///{tmp_path / 'ec.db'}"
    open_store(db_url)
    demo.build_network(f"file://{make_repo(tmp_path / 'repo')}", lambda msg: None)
    env = env_for(db_url, f"sqlite:///{tmp_path / 'queue.db'}")
    results = {}
    with workers(env, demo.PROCESSOR, 2):
        for script in sorted((ROOT / "shell" / "examples").glob("*.sh")):
            results[script.name] = bash(f"bash {script}", env, timeout=120)
    for name, done in results.items():
        assert done.returncode == 0, f"{name}: {done.stderr}"
    seed = results["seed-pipes.sh"].stdout.splitlines()
    assert seed[:2] == ["do_something(HI THERE!)", "do_this(do_something(HI THERE!) add some text)"]
    assert sorted(seed[2:4]) == ["do_something(HI THERE!)", "do_this(HI THERE!)"]
    assert seed[4] == "do_this(do_something(HI THERE!) add some text)" and len(seed) == 7
    flow = results["flow-tee.sh"]
    assert flow.stdout.splitlines()[0] == "do_this(do_something(HI THERE!))"
    assert flow.stderr.startswith("flow [running") and "        pyfi.processors.sample.do_this [done" in flow.stderr
    mapped = results["map-joblog.sh"].stdout.splitlines()
    assert mapped == [f"do_this({i})" for i in range(1, 13)] + [f"do_this({i})" for i in range(1, 6)]
    assert results["map-joblog.sh"].stderr.splitlines()[0] == "Seq\tExitval\tCommand"
