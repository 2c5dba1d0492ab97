"""Docs are tested: every command has a section in ec(1), every option `--help` prints is
documented, the man pages carry the seed's examples, and README.md opens with the two
setup lines. A command or option added without docs fails here."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from ectool.cli import COMMANDS, cli

ROOT = Path(__file__).resolve().parents[1]
EC_1 = ROOT / "man" / "ec.1"
EC_RUN_1 = ROOT / "man" / "ec-run.1"
README = ROOT / "README.md"

#: groups whose subcommands each need their own subsection in ec(1) (any other group
#: among the top-level commands is checked the same way)
GROUPS = ("add", "config", "db", "trust", "task")
#: the calling commands, whose options may be documented in ec(1) or ec-run(1)
CALLING = (("run",), ("map",), ("task", "run"), ("wait",))
SEED_EXAMPLES = (
    "ec add queue -n pyfi.queue1 -t direct",
    "ec add processor -n proc1 -g https://github.com/radiantone/pyfi-processors -m pyfi.processors.sample",
    "ec add socket -n pyfi.processors.sample.do_something -q pyfi.queue1 -pn proc1 -t do_something -c 5",
    "ec task run --socket pyfi.processors.sample.do_something --data \"['some data']\"",
)

# ---------------------------------------------------------------- parsing helpers


def plain(roff: str) -> str:
    """Roff source with the escapes that matter for matching undone: ``\\-`` is ``-``,
    font changes vanish, quote glyphs become quotes, ``\\e`` is a backslash."""
    text = re.sub(r"\\f(\[[^\]]*\]|\(..|.)", "", roff)
    for escape, char in (("\\-", "-"), ("\\(aq", "'"), ("\\(dq", '"'), ("\\&", ""), ("\\e", "\\")):
        text = text.replace(escape, char)
    return text


def sections(roff: str, macro: str) -> dict[str, str]:
    """``.SH``/``.SS`` title -> body up to the next heading of that level or higher."""
    stops = (".SH",) if macro == ".SH" else (".SH", ".SS")
    out: dict[str, str] = {}
    title = None
    for line in plain(roff).splitlines():
        head = line.split(" ", 1)
        if head[0] == macro:
            title = head[1].strip().strip('"') if len(head) > 1 else ""
            out.setdefault(title, "")
        elif head[0] in stops:
            title = None
        elif title is not None:
            out[title] += line + "\n"
    return out


def section_for(subsections: dict[str, str], path: tuple[str, ...]) -> str | None:
    """The body of the subsection titled ``ec PATH ...``, or None."""
    for title, body in subsections.items():
        if title.split()[: len(path) + 1] == ["ec", *path]:
            return body
    return None


def missing_sections(roff: str, paths: list[tuple[str, ...]]) -> list[str]:
    subs = sections(roff, ".SS")
    return [" ".join(p) for p in paths if section_for(subs, p) is None]


def mentions(text: str, option: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", text) is not None


def help_options(path: tuple[str, ...]) -> list[str]:
    """The long options ``ec PATH --help`` prints (declaration lines of its Options list)."""
    result = CliRunner().invoke(cli, [*path, "--help"])
    assert result.exit_code == 0, result.output
    options = result.output.split("Options:", 1)[1].split("Commands:", 1)[0]
    found: list[str] = []
    for line in options.splitlines():
        if re.match(r"  -", line):  # a declaration, not a wrapped help line
            found += [o for o in re.findall(r"(?<![\w-])--[a-z][\w-]*", line.split("  ")[1]) if o not in found]
    return found


def command_paths() -> list[tuple[str, ...]]:
    """Every top-level command, and every subcommand of every group (at least :data:`GROUPS`)."""
    ctx = click.Context(cli)
    paths: list[tuple[str, ...]] = [(name,) for name in COMMANDS]
    groups = [name for name in COMMANDS if isinstance(cli.get_command(ctx, name), click.Group)]
    assert set(GROUPS) <= set(groups), f"not groups any more: {set(GROUPS) - set(groups)}"
    for group in groups:
        paths += [(group, sub) for sub in cli.get_command(ctx, group).list_commands(ctx)]
    return paths


def readme_setup_block(text: str) -> list[str]:
    """The code block right after README's title line and blank lines (indented or fenced)."""
    lines = text.splitlines()
    i = 1
    while i < len(lines) and not lines[i].strip():
        i += 1
    if i < len(lines) and lines[i].startswith("```"):
        end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith("```")), None)
        assert end is not None, "README.md: the setup code fence is not closed"
        return lines[i + 1:end]
    block = []
    while i < len(lines) and (lines[i].startswith("    ") or lines[i].startswith("\t")):
        block.append(lines[i].strip())
        i += 1
    return block


# ---------------------------------------------------------------- the docs


def test_every_command_has_a_subsection_in_ec_1():
    paths = command_paths()
    assert ("run",) in paths and ("add", "queue") in paths and ("task", "run") in paths
    missing = missing_sections(EC_1.read_text(), paths)
    assert not missing, "man/ec.1 has no .SS subsection for: " + ", ".join(f"ec {m}" for m in missing)


@pytest.mark.parametrize("path", CALLING, ids=" ".join)
def test_calling_options_are_documented(path):
    text = plain(EC_1.read_text()) + plain(EC_RUN_1.read_text())
    options = help_options(path)
    assert "--timeout" in options and "--json" in options  # the parser still sees the options
    missing = [o for o in options if not mentions(text, o)]
    assert not missing, f"ec {' '.join(path)}: {', '.join(missing)} not in man/ec.1 or man/ec-run.1"


def test_every_option_is_documented_in_its_own_subsection():
    subs = sections(EC_1.read_text(), ".SS")
    missing = []
    for path in command_paths():
        cmd_name = " ".join(path)
        if isinstance(cli.get_command(click.Context(cli), path[0]), click.Group) and len(path) == 1:
            continue  # the group itself has only --help
        body = section_for(subs, path) or ""
        missing += [f"ec {cmd_name} {o}" for o in help_options(path) if o != "--help" and not mentions(body, o)]
    assert not missing, "options missing from their man/ec.1 subsection:\n  " + "\n  ".join(missing)


def test_ec_1_examples_build_the_seed_network():
    examples = sections(EC_1.read_text(), ".SH").get("EXAMPLES")
    assert examples is not None, "man/ec.1 has no EXAMPLES section"
    lines = {line.strip() for line in examples.splitlines()}
    missing = [e for e in SEED_EXAMPLES if e not in lines]
    assert not missing, "man/ec.1 EXAMPLES lack the seed's lines:\n  " + "\n  ".join(missing)


def test_man_pages_have_the_standard_sections():
    for page, wanted in ((EC_1, ("NAME", "SYNOPSIS", "DESCRIPTION", "COMMANDS", "EXIT STATUS",
                                 "ENVIRONMENT", "FILES", "EXAMPLES", "SEE ALSO")),
                         (EC_RUN_1, ("NAME", "SYNOPSIS", "DESCRIPTION", "EXIT STATUS", "EXAMPLES",
                                     "SEE ALSO"))):
        have = sections(page.read_text(), ".SH")
        assert not [s for s in wanted if s not in have], f"{page.name} lacks sections"


def test_readme_opens_with_two_setup_lines():
    if not README.exists():
        pytest.skip("README.md does not exist yet")
    text = README.read_text()
    assert text.splitlines()[0].strip(), "README.md must start with its title line"
    block = readme_setup_block(text)
    assert len(block) == 2 and all(line.strip() for line in block), (
        f"README.md must open (after the title) with exactly two setup code lines, found {block!r}")


# ---------------------------------------------------------------- the checkers can fail


def test_checkers_catch_omissions():
    page = '.SH COMMANDS\n.SS "ec run [OPTIONS] SOCKET"\n.B \\-\\-no\\-wait\n.SS "ec add queue"\n.SH EXIT\n'
    assert missing_sections(page, [("run",), ("add", "queue"), ("map",), ("add", "socket")]) == [
        "map", "add socket"]
    body = section_for(sections(page, ".SS"), ("run",))
    assert mentions(body, "--no-wait") and not mentions(body, "--no") and not mentions(body, "--json")
    assert section_for(sections(page, ".SS"), ("add",)) is not None
    assert readme_setup_block("# T\n\n    a\n    b\n    c\n") == ["a", "b", "c"]
    assert readme_setup_block("# T\n\n```sh\na\nb\n```\n") == ["a", "b"]
    assert readme_setup_block("# T\n\nProse first.\n\n    a\n") == []


# ---------------------------------------------------------------- linters (mandoc, shellcheck)

#: the shell code shellcheck reads (the zsh and fish completions are not sh: it cannot)
SHELL_CODE = ("install.sh", ".ci/run", "shell/ec.bash", *sorted(
    str(p.relative_to(ROOT)) for p in (ROOT / "shell" / "examples").glob("*.sh")))


def need_tool(name: str) -> str:
    """The tool's path; skip loudly when it is missing (fail under EC_REQUIRE_SERVICES=1,
    where .ci/run has installed it)."""
    import os
    import shutil

    path = shutil.which(name)
    if path:
        return path
    message = f"{name} is not installed (apt-get install -y {name}; .ci/run does)"
    if os.environ.get("EC_REQUIRE_SERVICES") == "1":
        pytest.fail(f"EC_REQUIRE_SERVICES=1 but {message}")
    pytest.skip(f"SKIPPED, TOOL MISSING: {message}")


@pytest.mark.parametrize("page", sorted(p.name for p in (ROOT / "man").iterdir()))
def test_man_pages_are_mandoc_clean(page):
    """No mandoc warning: a macro inside a table (not rendered), an empty paragraph, ..."""
    import subprocess

    done = subprocess.run([need_tool("mandoc"), "-Tlint", "-W", "warning", str(ROOT / "man" / page)],
                          capture_output=True, text=True)
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


@pytest.mark.parametrize("path", SHELL_CODE)
def test_shell_code_is_shellcheck_clean(path):
    import subprocess

    done = subprocess.run([need_tool("shellcheck"), "-x", path], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr


def test_developers_layout_names_every_module():
    """DEVELOPERS.md's layout map names every module file of ectool/ and agentd/ (and every
    package directory): a module added without a word there fails here."""
    text = (ROOT / "DEVELOPERS.md").read_text()
    layout = text[text.index("## Layout"):text.index("## ", text.index("## Layout") + 3)]
    missing = []
    for package in ("ectool", "agentd"):
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT)
            if path.name == "__init__.py":
                name = rel.parent.name + "/"
            else:
                name = path.name
            if not re.search(rf"(?<![\w.]){re.escape(name)}", layout):
                missing.append(str(rel))
    assert not missing, f"DEVELOPERS.md's layout does not name: {missing}"
