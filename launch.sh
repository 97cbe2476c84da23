#!/usr/bin/env bash
# Entry for runs, tests and sweeps. Usage: ./launch.sh {test|train} [args...]
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && PY=${PYTHON:-.venv/bin/python}

usage() {
  cat <<USAGE
usage: ./launch.sh COMMAND [ARGS...]
  test [pytest args]                 run the test suite (default: fast tests only)
  train CONFIG [--workdir=DIR] [--config.FIELD=VALUE ...]
                                     train with a config file, e.g. configs/default.py
USAGE
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case "$cmd" in
  test) exec "$PY" -m pytest -q "$@" ;;
  train)
    [ $# -ge 1 ] || { usage; exit 2; }
    config=$1; shift
    exec "$PY" -m avgmm.main --config="$config" "$@" ;;
  ""|-h|--help|help) usage ;;
  *) echo "launch.sh: unknown command '$cmd'" >&2; usage >&2; exit 2 ;;
esac
