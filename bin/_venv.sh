# Sourced by bin/up and bin/test: creates .venv on first use and keeps it in
# step with pyproject.toml, so a fresh machine needs nothing but python3.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null 2>&1 || PY=python3
# As root, jobs run as an unprivileged user (./bin/up: spoolsoap-job) through the venv's interpreter:
# if other users cannot run the one found (a Python under /root), build from the system's instead.
if [ -z "${PYTHON:-}" ] && [ "$(id -u)" = 0 ] && [ ! -x "$VENV/bin/python" ] && command -v runuser >/dev/null \
   && ! runuser -u nobody -- test -x "$(readlink -f "$(command -v "$PY")")" 2>/dev/null \
   && [ -x /usr/bin/python3.11 ]; then
    PY=/usr/bin/python3.11
fi
stamp="$VENV/.installed"
if [ ! -x "$VENV/bin/python" ]; then
    echo "bootstrapping virtual environment in $VENV" >&2
    "$PY" -m venv "$VENV"
fi
if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ]; then
    "$VENV/bin/python" -m pip install -q --upgrade pip >&2
    "$VENV/bin/python" -m pip install -q -e "$ROOT[test]" >&2
    # clfpy declares suds-jurko (unbuildable on 3.11); suds + requests come from pyproject.
    "$VENV/bin/python" -m pip install -q --no-deps "clfpy==1.3.2" >&2
    touch "$stamp"
fi
export PATH="$VENV/bin:$PATH"
cd "$ROOT"
