#!/usr/bin/env bash
# Runs every test of the workspace, on a fresh machine as on a developer's.
#
# PostgreSQL: uses TEST_DATABASE_URL when it is set; otherwise installs the server if it is
# missing (Debian's package), starts a throwaway cluster on a free loopback port in a temp
# folder, and stops and deletes it on exit. Each test creates its own database on it.
# Redis: the tests start their own redis-server on loopback; Debian's package is installed
# when it is missing. SQLite needs nothing: it is compiled in. Python test tools (scripts/test-requirements.txt)
# are installed into target/test-venv from PyPI. With no arguments it then runs
# scripts/e2e.sh, the end-to-end flow against the real binary; arguments go to `cargo test`
# and skip that step.
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/pg.sh

# A virtualenv of the Python tools the tests drive the server with.
setup_python_tools() {
  local venv=target/test-venv
  if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
  fi
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r scripts/test-requirements.txt
  NB_TEST_PYTHON="$PWD/$venv/bin/python"
  export NB_TEST_PYTHON
}
setup_python_tools

# The console's browser test (scripts/console_check.py, from e2e.sh) drives Debian's chromium.
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  log "chromium or chromedriver is not installed: installing Debian's chromium and chromium-driver"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
fi

# The tests start throwaway redis-servers themselves; they need the binary.
if ! command -v redis-server >/dev/null 2>&1; then
  log "redis-server is not installed: installing Debian's redis-server package"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
  # The package starts a system-wide server; the tests want only their own.
  as_root service redis-server stop >/dev/null 2>&1 || true
fi

if [ -z "${TEST_DATABASE_URL:-}" ]; then
  start_throwaway_postgres
else
  log "using TEST_DATABASE_URL"
fi

cargo test --workspace --all-features --locked "$@"
# The real binary, end to end, unless a subset of the tests was asked for.
if [ "$#" -eq 0 ]; then
  ./scripts/e2e.sh
fi
