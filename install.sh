#!/usr/bin/env bash
# Install ElasticCode for the current user: no root, idempotent, re-run to upgrade.
#
#   ./install.sh [--prefix DIR] [--dev] [--bench] [--systemd [--unit-dir DIR]] [--quiet]
#
# Creates a virtualenv (default ${XDG_DATA_HOME:-~/.local/share}/elasticcode/venv), installs
# ec and ec-agentd into it, links them into ~/.local/bin, installs man pages into
# ~/.local/share/man and bash/zsh/fish completions (the sample processor for `ec demo` ships in
# the package).
# --systemd also installs the ec-agentd unit (a user unit; a system unit when run as root).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
data_home=${XDG_DATA_HOME:-$HOME/.local/share}
prefix=$data_home/elasticcode/venv
extras=""
quiet=""
systemd=""
unit_dir=""
python=${PYTHON:-}

usage() { sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) prefix=${2:?--prefix needs a directory}; shift 2 ;;
    --prefix=*) prefix=${1#--prefix=}; shift ;;
    --dev) extras="${extras:+$extras,}dev"; shift ;;
    --bench) extras="${extras:+$extras,}bench"; shift ;;
    --quiet|-q) quiet=-q; shift ;;
    --systemd) systemd=1; shift ;;
    --unit-dir) unit_dir=${2:?--unit-dir needs a directory}; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "install.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
done

say() { echo "install.sh: $*" >&2; }

if [ -z "$python" ]; then
  for candidate in python3.13 python3.12 python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      python=$candidate; break
    fi
  done
fi
[ -n "$python" ] || { say "needs Python >= 3.11 (set PYTHON=/path/to/python3.11)"; exit 1; }

# the data directory holds every call's arguments and results (ec.db, queue.db): private,
# as ec itself creates it, unless it exists already (then its mode is someone's choice)
if [ ! -d "$data_home/elasticcode" ]; then
  mkdir -p "$data_home"
  mkdir -m 700 "$data_home/elasticcode"
fi
if [ ! -x "$prefix/bin/python" ]; then
  say "creating virtualenv $prefix"
  "$python" -m venv "$prefix"
fi
"$prefix/bin/python" -m pip install $quiet --disable-pip-version-check --upgrade pip >/dev/null 2>&1 || true
spec="$here"
[ -n "$extras" ] && spec="${here}[$extras]"
say "installing elasticcode${extras:+ with extras $extras}"
# --dev installs editable, so the tests and the tools always run the checkout as it is now.
# setuptools' 'compat' mode puts the checkout on sys.path with a .pth line; its default
# mode installs an import hook that costs every python start ~25 ms (ec --help, ec run);
# if a future setuptools drops compat, the default editable mode is used instead.
pip_install() {
  "$prefix/bin/python" -m pip install $quiet --disable-pip-version-check --upgrade "$@" 2>&1 |
    grep -v "^WARNING: Location" >&2
  return "${PIPESTATUS[0]}"
}
case ",$extras," in
  *,dev,*) pip_install --editable "$spec" --config-settings editable_mode=compat ||
             pip_install --editable "$spec" || true ;;
  *) pip_install "$spec" || true ;;
esac
"$prefix/bin/python" -c 'import ectool, agentd' || { say "install failed"; exit 1; }

bin=$HOME/.local/bin
mkdir -p "$bin"
for exe in ec ec-agentd; do
  ln -sf "$prefix/bin/$exe" "$bin/$exe"
done
say "linked ec and ec-agentd into $bin"

man_dir=$data_home/man
if compgen -G "$here/man/*.[0-9]" >/dev/null; then
  for page in "$here"/man/*.[0-9]; do
    section=${page##*.}
    mkdir -p "$man_dir/man$section"
    cp "$page" "$man_dir/man$section/"
  done
  say "installed man pages into $man_dir"
fi

if [ -f "$here/shell/ec.bash" ]; then
  mkdir -p "$data_home/bash-completion/completions"
  cp "$here/shell/ec.bash" "$data_home/bash-completion/completions/ec"
fi
if [ -f "$here/shell/_ec" ]; then
  mkdir -p "$data_home/zsh/site-functions"
  cp "$here/shell/_ec" "$data_home/zsh/site-functions/_ec"
fi
if [ -f "$here/shell/ec.fish" ]; then
  fish_dir=${XDG_CONFIG_HOME:-$HOME/.config}/fish/completions
  mkdir -p "$fish_dir"
  cp "$here/shell/ec.fish" "$fish_dir/ec.fish"
fi
say "installed bash, zsh and fish completions (socket names complete from the store)"

if [ -n "$systemd" ]; then
  scope="--user"
  if [ -z "$unit_dir" ]; then
    if [ "$(id -u)" = 0 ]; then unit_dir=/etc/systemd/system; scope=""; else
      unit_dir=${XDG_CONFIG_HOME:-$HOME/.config}/systemd/user; fi
  fi
  mkdir -p "$unit_dir"
  sed "s|@EC_AGENTD@|$prefix/bin/ec-agentd|" "$here/shell/systemd/ec-agentd.service" > "$unit_dir/ec-agentd.service"
  say "installed $unit_dir/ec-agentd.service; start it: systemctl $scope daemon-reload && systemctl $scope enable --now ec-agentd"
fi

case ":$PATH:" in
  *":$bin:"*) ;;
  *) say "note: $bin is not on your PATH; add it, or run $bin/ec" ;;
esac
say "done. Next: $bin/ec demo"
