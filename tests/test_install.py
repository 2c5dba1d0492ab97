"""install.sh: no root, idempotent, links, man pages, completions, systemd unit."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_install_twice_into_a_fresh_home(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "EC_", "VIRTUAL_ENV"))}
    env.update(HOME=str(home), PATH="/usr/bin:/bin")
    prefix = tmp_path / "venv"
    for _ in range(2):  # the second run upgrades in place
        done = subprocess.run(["bash", str(ROOT / "install.sh"), "--prefix", str(prefix), "--quiet", "--systemd",
                               "--unit-dir", str(home / "units")],
                              env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
    assert "Next: " in done.stderr and "ec demo" in done.stderr
    ec = home / ".local/bin/ec"
    assert ec.is_symlink() and (home / ".local/bin/ec-agentd").is_symlink()
    helped = subprocess.run([str(ec), "--help"], env=env, capture_output=True, text=True)
    assert helped.returncode == 0 and "Commands:" in helped.stdout
    man = home / ".local/share/man"
    assert (man / "man1/ec.1").exists() and (man / "man8/ec-agentd.8").exists()
    assert (home / ".local/share/bash-completion/completions/ec").exists()
    # the sample ships in the package: a user with another HOME (a service account, a
    # container) finds it too, with nothing under the installing user's data directory
    other = tmp_path / "other-home"
    other.mkdir()
    found = subprocess.run([str(prefix / "bin/python"), "-c", "from ectool.demo import sample_source; "
                            "print(sample_source())"], env=dict(env, HOME=str(other)),
                           capture_output=True, text=True, cwd=other)
    assert found.returncode == 0, found.stderr
    assert found.stdout.startswith(str(prefix)) and "site-packages/ectool/sample" in found.stdout
    assert not (home / ".local/share/elasticcode/examples").exists()
    # the data directory that will hold ec.db and queue.db is private from the start
    assert (home / ".local/share/elasticcode").stat().st_mode & 0o777 == 0o700
    unit = home / "units/ec-agentd.service"
    text = unit.read_text()
    assert f"ExecStart={prefix}/bin/ec-agentd" in text and "Type=notify" in text
    if shutil.which("systemd-analyze"):
        verify = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True,
                                env=dict(os.environ, MANPATH=f"{man}:"))
        problems = [ln for ln in verify.stderr.splitlines() if "ec-agentd.service" in ln]
        assert not problems, verify.stderr


def test_install_rejects_unknown_option():
    done = subprocess.run(["bash", str(ROOT / "install.sh"), "--frobnicate"], capture_output=True, text=True)
    assert done.returncode == 2 and "unknown option" in done.stderr
