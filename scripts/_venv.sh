# Sourced by the scripts in this folder: create a virtualenv and install relayd with its
# test extra when missing or when pyproject.toml changed.
# The interpreter: $PYTHON when set (a version such as 3.13, or a command or path; see
# _python.sh), else python3.11, else python3. The default one uses .venv; one chosen
# through $PYTHON gets its own .venv-X.Y, so .venv stays as it is. $RELAYD_VENV overrides.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/_python.sh"
if [ -n "${PYTHON:-}" ]; then
  if ! PYTHON_FOUND=$(find_python "$PYTHON"); then
    echo "Python $PYTHON not found (tried python$PYTHON on PATH and pyenv)" >&2
    exit 1
  fi
  VENV="${RELAYD_VENV:-$ROOT/.venv-$(python_version "$PYTHON_FOUND")}"
else
  PYTHON_FOUND=$(find_python 3.11 || find_python python3) \
    || { echo "no python3.11 or python3 found" >&2; exit 1; }
  VENV="${RELAYD_VENV:-$ROOT/.venv}"
fi
if [ ! -x "$VENV/bin/python" ]; then
  echo "setting up $VENV with $PYTHON_FOUND" >&2
  "$PYTHON_FOUND" -m venv "$VENV"
fi
STAMP="$VENV/.relayd-installed"
if [ ! -f "$STAMP" ] || [ "$ROOT/pyproject.toml" -nt "$STAMP" ]; then
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e "$ROOT[test]"
  touch "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
