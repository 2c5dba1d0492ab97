"""ec compose: apply is transactional and idempotent; export round-trips."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from ectool.cli import cli

DOC = """
trust = ["https://github.com/radiantone/*"]

[[queue]]
name = "pyfi.queue1"
type = "direct"

[[processor]]
name = "proc1"
gitrepo = "https://github.com/radiantone/pyfi-processors"
module = "pyfi.processors.sample"

[[socket]]
name = "pyfi.processors.sample.do_something"
queue = "pyfi.queue1"
processor = "proc1"
task = "do_something"
concurrency = 5

[[socket]]
name = "pyfi.processors.sample.do_this"
queue = "pyfi.queue1"
processor = "proc1"
task = "do_this"

[[plug]]
name = "p1"
source = "pyfi.processors.sample.do_something"
target = "pyfi.processors.sample.do_this"
"""


def run(db_url, *args, input=None):
    return CliRunner().invoke(cli, ["--db", db_url, *args], input=input)


def test_apply_twice_then_export_round_trips(db_url, tmp_path):
    first = run(db_url, "compose", "apply", "-", "--json", input=DOC)
    assert first.exit_code == 0, first.output
    report = json.loads(first.stdout)
    assert len(report["created"]) == 6 and report["updated"] == []
    second = json.loads(run(db_url, "compose", "apply", "-", "--json", input=DOC).stdout)
    assert second["created"] == [] and second["updated"] == [] and len(second["unchanged"]) == 6
    exported = run(db_url, "compose", "export").stdout
    assert '[[plug]]\nname = "p1"' in exported
    again = json.loads(run(db_url, "compose", "apply", "-", "--json", input=exported).stdout)
    assert again["created"] == [] and again["updated"] == []
    changed = DOC.replace("concurrency = 5", "concurrency = 7")
    third = json.loads(run(db_url, "compose", "apply", "-", "--json", input=changed).stdout)
    assert third["updated"] == ["socket pyfi.processors.sample.do_something"]


def test_bad_file_changes_nothing(db_url):
    broken = DOC.replace('target = "pyfi.processors.sample.do_this"', 'target = "nope"')
    result = run(db_url, "compose", "apply", "-", input=broken)
    assert result.exit_code == 2 and "no socket named 'nope'" in result.output
    assert json.loads(run(db_url, "ls", "queues", "--json").stdout) == []  # all or nothing
    for text, message in (("[[gizmo]]\nname='x'", "unknown section"), ("[[queue]]\ntype='direct'", "missing name"),
                          ("[[queue]]\nname=3", "wrong type"), ("[[queue", "malformed"),
                          ("x = " + "[" * 100_000 + "]" * 100_000, "nested too deeply"),
                          (b"[[queue]]\nname = '\xff'\n", "not UTF-8 (byte 18)")):
        bad = run(db_url, "compose", "apply", "-", input=text)
        assert bad.exit_code == 2 and message in bad.output, bad.output


def test_export_keeps_a_script_processors_runtime_and_applying_it_works(db_url, tmp_path):
    """Issue 21: export dropped ``runtime = "exec"``, and applying the file then failed
    (``invalid module name ''``)."""
    added = run(db_url, "add", "processor", "-n", "scripts", "-g", "file:///src/repo", "--runtime", "exec")
    assert added.exit_code == 0, added.output
    exported = run(db_url, "compose", "export").stdout
    assert 'runtime = "exec"' in exported
    other = f"sqlite:///{tmp_path / 'other.db'}"
    applied = run(other, "compose", "apply", "-", "--json", input=exported)
    assert applied.exit_code == 0, applied.output
    assert json.loads(applied.stdout)["created"] == ["processor scripts"]
    shown = json.loads(run(other, "show", "processor", "scripts", "--json").stdout)
    assert shown["runtime"] == "exec"
    again = json.loads(run(other, "compose", "apply", "-", "--json", input=exported).stdout)
    assert again["updated"] == [] and again["created"] == []


def test_the_three_host_example_applies(db_url):
    """examples/three-hosts.toml (README "Many hosts") is a valid network: a floating
    processor and one pinned to host3."""
    from pathlib import Path

    example = Path(__file__).parent.parent / "examples" / "three-hosts.toml"
    applied = run(db_url, "compose", "apply", str(example), "--json")
    assert applied.exit_code == 0, applied.output
    procs = {p["name"]: p for p in json.loads(run(db_url, "ls", "processors", "--json").stdout)}
    assert procs["proc1"]["host"] is None and procs["proc1"]["concurrency"] == 6
    assert procs["proc-big"]["host"] == "host3"


# -- the pure halves: what is wrong with a table, what changes ---------------------------------

@pytest.mark.parametrize("kind, item, expected", [
    ("queue", {"name": "q"}, None),
    ("queue", {"name": "q", "colour": "red"}, "unknown key(s) colour"),
    ("queue", {"type": "direct"}, "missing name"),
    ("queue", {"name": "q", "max_length": "10"}, "max_length has the wrong type ('10')"),
    ("queue", {"name": "q", "max_length": True}, "max_length has the wrong type (True)"),
    ("queue", "q", "use [[queue]] tables"),
    ("socket", {"name": "s", "queue": "q", "processor": "p"}, "missing task"),
    ("socket", {"name": "s", "queue": "q", "processor": "p", "task": "t", "backoff": 0.5}, None),
    ("schedule", {"name": "s", "workflow": "w", "every": 10}, None),
    ("schedule", {"name": "s", "grace": [1]}, "grace has the wrong type ([1])"),
    ("workflow", {"name": "w", "pipeline": ["a", {"parallel": ["b", "c"]}]}, None),
    ("workflow", {"name": "w", "funnel": ["a"], "final": {"socket": "t", "args": [1]}}, None),
    ("workflow", {"name": "w"}, "workflow w: give exactly one of socket, pipeline, parallel, funnel"),
    ("workflow", {"name": "w", "pipeline": ["a"], "parallel": ["b"]}, "give exactly one of"),
    ("workflow", {"name": "w", "parallel": [{"funnel": ["a"]}]}, "w.parallel[0]: a funnel needs a final step"),
])
def test_item_problem(kind, item, expected):
    from ectool.compose import item_problem

    found = item_problem(kind, item)
    assert found == expected if expected is None else expected in found


@pytest.mark.parametrize("doc, expected", [
    ({}, None),
    ({"trust": ["x"], "queue": [{"name": "q"}]}, None),
    ({"network": []}, "f: unknown section(s) network"),
    ({"trust": "x"}, "f: trust must be a list of strings"),
    ({"queue": {"name": "q"}}, "f: use [[queue]] tables"),
    ({"queue": [{"name": "q"}, {"name": 2}]}, "f: queue #2: name has the wrong type (2)"),
])
def test_problem(doc, expected):
    from ectool.compose import problem

    assert problem(doc, "f") == expected


@pytest.mark.parametrize("current, wanted, expected", [
    ({"a": 1, "b": 2}, {"a": 1, "b": 2}, {}),
    ({"a": 1, "b": 2}, {"b": 3}, {"b": 3}),
    ({"a": None}, {"a": None, "c": 1}, {"c": 1}),
])
def test_changes(current, wanted, expected):
    from ectool.compose import changes

    assert changes(current, wanted) == expected


def test_workflows_apply_before_the_schedules_that_start_them(db_url):
    from ectool import compose
    from ectool.store import open_store

    open_store(db_url)
    doc = compose.parse(DOC + '''
[[schedule]]
name = "s"
workflow = "w"
every = "1h"

[[workflow]]
name = "w"
funnel = ["pyfi.processors.sample.do_something"]
final = "pyfi.processors.sample.do_this"
''')
    report = compose.apply(doc)
    assert report["created"][-2:] == ["workflow w", "schedule s"]
    assert compose.apply(compose.parse(compose.export()))["created"] == []
