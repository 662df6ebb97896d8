# Sourced by _venv.sh and .ci/run: find a Python interpreter on this machine.
#
# find_python SPEC prints the path of an interpreter that really runs, or returns 1.
# SPEC is a version ("3.13": python3.13 on PATH, else pyenv's 3.13, else the newest
# ~/.pyenv/versions/3.13.*) or a command or path ("python3", "/usr/bin/python3.13").
# Each candidate is run once: a pyenv shim for a version that is installed but not
# selected is on PATH yet fails (exit 127), so being on PATH is not enough.

# python_version PYTHON: print its "major.minor", or fail if it does not run.
python_version() {
  "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null
}

find_python() {
  local spec=$1 candidate found
  if [[ ! "$spec" =~ ^[0-9]+\.[0-9]+$ ]]; then
    found=$(command -v "$spec") && python_version "$found" >/dev/null && echo "$found"
    return
  fi
  local candidates=()
  found=$(command -v "python$spec") && candidates+=("$found")
  if command -v pyenv >/dev/null && found=$(pyenv prefix "$spec" 2>/dev/null); then
    candidates+=("${found%%:*}/bin/python$spec")
  fi
  # pyenv not on PATH (e.g. a non-login shell): its versions folder, newest patch first
  while IFS= read -r found; do
    candidates+=("$found")
  done < <(ls -d "${PYENV_ROOT:-$HOME/.pyenv}/versions/$spec".*/bin/"python$spec" 2>/dev/null \
           | sort -rV)
  for candidate in "${candidates[@]}"; do
    if [ -x "$candidate" ] && [ "$(python_version "$candidate")" = "$spec" ]; then
      echo "$candidate"
      return
    fi
  done
  return 1
}
