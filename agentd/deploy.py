"""Deploy a processor from git into an isolated virtualenv.

* Repositories are cloned once (bare) into ``$XDG_CACHE_HOME/elasticcode/repos/`` and
  fetched on update; each deployed commit gets a detached worktree under ``src/``.
* Each processor+commit gets a virtualenv under ``venvs/`` built from the repository's
  own metadata (``requirements.txt`` and ``[project].dependencies`` of ``pyproject.toml``,
  or ``pip install .`` for a ``setup.py``), never mixed with ec's own packages. A finished
  env has a ``.ec-ready`` marker and is reused: a warm restart installs nothing.

Errors become :class:`DeployError` with a one-line reason the agent records on the processor.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

from ectool import paths


class DeployError(Exception):
    """Deployment failed; the message is the reason shown in ``ec ls processors``."""


@dataclass(frozen=True)
class Deployment:
    commit: str
    branch: str | None  # the branch deployed (the repository's HEAD when none was named); None for a pinned commit
    src: Path  # the module's directory (repository root, or its #subdirectory=)
    python: str  # the virtualenv's python


def split_url(gitrepo: str) -> tuple[str, str]:
    """``URL#subdirectory=sub`` -> (clone URL, subdirectory); local paths become file:// URLs."""
    url, _, fragment = gitrepo.partition("#")
    sub = ""
    for part in fragment.split("&"):
        if part.startswith("subdirectory="):
            sub = part.split("=", 1)[1].strip("/")
    if "://" not in url and not url.startswith("git@"):
        url = "file://" + str(Path(url).expanduser().resolve())
    if ".." in Path(sub).parts:
        raise DeployError(f"bad subdirectory {sub!r}")
    return url, sub


def _key(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _git_error(exc) -> str:
    """The first ``fatal:``/``error:`` line of a git failure (else its last line)."""
    text = (getattr(exc, "stderr", "") or str(exc)).replace("stderr:", "")
    lines = [ln.strip().strip("'\" ") for ln in text.splitlines() if ln.strip().strip("'\" ")]
    for ln in lines:
        if ln.startswith(("fatal:", "error:")):
            return ln.split(":", 1)[1].strip()
    return lines[-1] if lines else str(exc)


def fetch(url: str) -> Path:
    """A bare clone of ``url`` in the cache, fetched up to date."""
    import git

    dest = paths.cache_dir() / "repos" / _key(url)
    try:
        if (dest / "HEAD").exists():
            repo = git.Repo(dest)
            repo.git.fetch("origin", "+refs/heads/*:refs/heads/*", "--prune")
            follow_head(repo)
        else:
            tmp = dest.with_name(dest.name + f".tmp{os.getpid()}")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.parent.mkdir(parents=True, exist_ok=True)
            git.Repo.clone_from(url, tmp, bare=True, env={"GIT_TERMINAL_PROMPT": "0"})
            os.replace(tmp, dest)
    except git.GitCommandError as exc:
        raise DeployError(f"cannot fetch {url}: {_git_error(exc)}") from None
    return dest


def follow_head(repo) -> None:
    """Point the bare clone's HEAD where the origin's points now (its default branch may
    have changed since the clone); left alone when the origin does not say."""
    import git

    try:
        out = repo.git.ls_remote("--symref", "origin", "HEAD")
    except git.GitCommandError:
        return
    for line in out.splitlines():
        if line.startswith("ref: refs/heads/") and line.endswith("\tHEAD"):
            repo.git.symbolic_ref("HEAD", line[len("ref: "):-len("\tHEAD")])
            return


def default_branch(repo_dir: Path) -> str:
    """The repository's default branch: what its HEAD names (``git clone`` checks it out)."""
    import git

    try:
        ref = git.Repo(repo_dir).git.symbolic_ref("--quiet", "HEAD")
    except git.GitCommandError:
        raise DeployError("the repository has no default branch (HEAD); name one with -b") from None
    return ref.removeprefix("refs/heads/")


def resolve(repo_dir: Path, branch: str | None, commit: str | None) -> tuple[str, str | None]:
    """(the full sha to deploy, its branch): the pinned commit, else the head of ``branch``,
    else of the repository's default branch."""
    import git

    repo = git.Repo(repo_dir)
    if not commit and not branch:
        branch = default_branch(repo_dir)
    ref = commit or f"refs/heads/{branch}"
    try:
        return repo.git.rev_parse("--verify", "--quiet", f"{ref}^{{commit}}"), None if commit else branch
    except git.GitCommandError:
        what = f"commit {commit}" if commit else f"branch {branch!r}"
        raise DeployError(f"{what} does not exist in the repository") from None


def checkout(repo_dir: Path, sha: str) -> Path:
    """A detached worktree of ``sha`` (created once, then reused)."""
    import git

    dest = paths.cache_dir() / "src" / sha
    if (dest / ".git").exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(dest, ignore_errors=True)
    try:
        git.Repo(repo_dir).git.worktree("add", "--detach", "--force", str(dest), sha)
    except git.GitCommandError as exc:
        raise DeployError(f"cannot check out {sha[:12]}: {_git_error(exc)}") from None
    return dest


def requirements(src: Path) -> tuple[list[str], bool]:
    """(pip arguments for the dependencies, whether to install the project itself)."""
    args: list[str] = []
    if (src / "requirements.txt").exists():
        args += ["-r", str(src / "requirements.txt")]
    pyproject = src / "pyproject.toml"
    if pyproject.exists():
        try:
            deps = tomllib.loads(pyproject.read_text()).get("project", {}).get("dependencies", [])
        except tomllib.TOMLDecodeError as exc:
            raise DeployError(f"malformed pyproject.toml: {exc}") from None
        args += list(deps)
        return args, False
    return args, (src / "setup.py").exists()


def build_env(src: Path, key: str, python: str = sys.executable) -> str:
    """The virtualenv for ``key`` (processor+commit), built once from ``src``'s metadata."""
    env = paths.cache_dir() / "venvs" / key
    py = env / "bin" / "python"
    if (env / ".ec-ready").exists() and py.exists():
        return str(py)
    shutil.rmtree(env, ignore_errors=True)
    env.parent.mkdir(parents=True, exist_ok=True)
    run([python, "-m", "venv", "--without-pip", str(env)], "cannot create virtualenv")
    deps, install_self = requirements(src)
    pip = [python, "-m", "pip", "--python", str(py), "install", "--disable-pip-version-check", "-q"]
    if deps:
        run([*pip, *deps], "cannot install requirements")
    if install_self:
        run([*pip, str(src)], "cannot install the processor package")
    (env / ".ec-ready").write_text(key + "\n")
    return str(py)


def check_import(python: str, module: str, src: Path) -> None:
    """Fail deployment early, with the reason, if the module does not import."""
    code = "import sys, importlib; sys.path.insert(0, sys.argv[1]); importlib.import_module(sys.argv[2])"
    run([python, "-I", "-c", code, str(src), module], f"module {module!r} fails to import", cwd=src)


def run(argv: list[str], what: str, cwd: Path | None = None) -> None:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=900, cwd=cwd)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DeployError(f"{what}: {exc}") from None
    if done.returncode != 0:
        lines = [ln for ln in (done.stderr or done.stdout).splitlines() if ln.strip()]
        detail = next((ln for ln in reversed(lines) if "Error" in ln or "error" in ln), lines[-1] if lines else "")
        raise DeployError(f"{what}: {detail.strip()[:300]}")


def deploy(gitrepo: str, branch: str | None, commit: str | None, module: str,
           runtime: str = "python") -> Deployment:
    """Fetch, check out, build the env and check the import; return what to run. Without a
    branch or commit the repository's default branch (its HEAD) is deployed. A script
    processor (``runtime="exec"``) needs only the checkout: its workers run files from it."""
    url, sub = split_url(gitrepo)
    repo_dir = fetch(url)
    sha, deployed_branch = resolve(repo_dir, branch, commit)
    tree = checkout(repo_dir, sha)
    src = tree / sub if sub else tree
    if not src.is_dir():
        raise DeployError(f"subdirectory {sub!r} does not exist at {sha[:12]}")
    if runtime == "exec":
        return Deployment(sha, deployed_branch, src, sys.executable)
    python = build_env(src, f"{sha[:16]}-{_key(url + '#' + sub)}")
    check_import(python, module, src)
    return Deployment(sha, deployed_branch, src, python)


def local_url(url: str) -> bool:
    return url.startswith("file://") or "://" not in url

