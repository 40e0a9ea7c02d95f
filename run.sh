#!/usr/bin/env bash
# Set up everything on a fresh machine, then run one job:
#   bash run.sh train [fmnist train flags...]   train the default model on the default data, write the report
#   bash run.sh test  [pytest flags...]         run the test suite (what CI runs)
#   bash run.sh setup                           only set up
# Setup: a virtualenv in .venv with pinned dependencies (requirements.lock), fmnist
# installed in it, the dataset (Debian's dataset-fashion-mnist when running as root on
# Debian, otherwise a verified download into the user cache) and, for the test suite,
# Chromium for the browser tests and PostgreSQL for the shared-study tuning test when they
# can be installed.
set -euo pipefail
cd "$(dirname "$0")"
job="${1:-train}"
shift || true

PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv}"

as_root_on_debian() { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; }

apt_install() {
    as_root_on_debian || return 1
    if ! dpkg -s "$@" >/dev/null 2>&1; then
        echo "run.sh: installing Debian packages: $*" >&2
        (apt-get install -y -qq "$@" >/dev/null 2>&1) || (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq "$@" >/dev/null)
    fi
}

setup_python() {
    if [ ! -x "$VENV/bin/python" ]; then
        "$PYTHON" -m venv "$VENV"
    fi
    local stamp="$VENV/.fmnist-installed"
    if [ ! -f "$stamp" ] || [ requirements.lock -nt "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
        "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r requirements.lock
        "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps -e .
        touch "$stamp"
    fi
}

setup_data() {
    if "$VENV/bin/fmnist" data info --no-download >/dev/null 2>&1; then
        return
    fi
    apt_install dataset-fashion-mnist || true
    if ! "$VENV/bin/fmnist" data info --no-download >/dev/null 2>&1; then
        "$VENV/bin/fmnist" data fetch
    fi
}

setup_browser() {
    command -v chromium >/dev/null 2>&1 || apt_install chromium chromium-driver || \
        echo "run.sh: no Chromium; the browser tests will be skipped" >&2
}

setup_postgres() {
    # The tuning tests start their own PostgreSQL server (two workers sharing one study).
    compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || apt_install postgresql || \
        echo "run.sh: no PostgreSQL; the shared-study tuning test will be skipped" >&2
}

setup_python
case "$job" in
    setup)
        setup_data
        ;;
    train)
        setup_data
        exec "$VENV/bin/fmnist" train "$@"
        ;;
    test)
        setup_data
        setup_browser
        setup_postgres
        exec "$VENV/bin/python" -m pytest "$@"
        ;;
    *)
        echo "usage: bash run.sh train|test|setup [args...]" >&2
        exit 2
        ;;
esac
