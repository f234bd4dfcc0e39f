#!/usr/bin/env bash
# Install Diswoot as a systemd service:
#   - a virtual environment in /opt/diswoot (byte-compiled: the unit mounts it read-only),
#   - diswoot.service and diswoot@.service in /etc/systemd/system,
#   - /etc/diswoot/diswoot.env (mode 0600) from .env.example, only if absent (without its
#     DISWOOT_DB_PATH line: the units set that to their state directory),
#   - systemctl daemon-reload.
# Re-running it upgrades the package in place and keeps the existing configuration.
set -euo pipefail

usage() {
    cat <<'EOF'
usage: scripts/install.sh [--wheels DIR | --source DIR] [--prefix DIR] [--python PYTHON] [--no-reload]

  --source DIR     install from a source tree (default: the tree holding this script);
                   pip fetches the dependencies from the package index
  --wheels DIR     install offline from a directory holding the diswoot wheel and the wheels
                   of all its dependencies (pip wheel . -w DIR)
  --prefix DIR     the virtual environment (default /opt/diswoot, where the units expect it)
  --python PYTHON  the interpreter that creates the environment (default python3)
  --no-reload      do not run systemctl daemon-reload
EOF
}

top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source_dir=$top
wheels=""
prefix=/opt/diswoot
python=python3
reload=yes
confdir=/etc/diswoot
unitdir=/etc/systemd/system

while [ $# -gt 0 ]; do
    case $1 in
        --source) source_dir=$2; shift 2 ;;
        --wheels) wheels=$2; shift 2 ;;
        --prefix) prefix=$2; shift 2 ;;
        --python) python=$2; shift 2 ;;
        --no-reload) reload=no; shift ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; exit 2 ;;
    esac
done

if [ "$(id -u)" -ne 0 ]; then
    echo "install.sh: run as root (it writes $prefix, $confdir and $unitdir)" >&2
    exit 1
fi
# The service runs as a dynamic user: everything installed must be world-readable.
umask 022

echo "==> virtual environment in $prefix"
"$python" -m venv "$prefix"
pip=("$prefix/bin/python" -m pip install --quiet --upgrade --disable-pip-version-check)
if [ -n "$wheels" ]; then
    echo "==> installing diswoot from the wheels in $wheels (offline)"
    "${pip[@]}" --no-index --find-links "$wheels" diswoot
else
    echo "==> installing diswoot from $source_dir"
    "${pip[@]}" "$source_dir"
fi
"$prefix/bin/python" -m compileall -q "$prefix" >/dev/null

echo "==> units in $unitdir"
install -m 0644 "$top/systemd/diswoot.service" "$top/systemd/diswoot@.service" "$unitdir/"

install -d -m 0755 "$confdir"
if [ -e "$confdir/diswoot.env" ]; then
    echo "==> keeping the existing $confdir/diswoot.env"
else
    echo "==> $confdir/diswoot.env created from .env.example: fill in the credentials"
    # EnvironmentFile= overrides the unit's Environment=DISWOOT_DB_PATH=...: leave it out
    (
        umask 077
        sed 's|^DISWOOT_DB_PATH=.*|# DISWOOT_DB_PATH is set by the unit (its state directory)|' \
            "$top/.env.example" >"$confdir/diswoot.env.tmp"
    )
    chown root:root "$confdir/diswoot.env.tmp"
    mv "$confdir/diswoot.env.tmp" "$confdir/diswoot.env"
fi

if [ "$reload" = yes ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload
fi
echo "==> done: $("$prefix/bin/python" -m pip show diswoot 2>/dev/null | sed -n 's/^Version: /diswoot /p')"
echo "    next: edit $confdir/diswoot.env, probe it with"
echo "    $prefix/bin/diswoot check --env-file $confdir/diswoot.env, then systemctl enable --now diswoot"
