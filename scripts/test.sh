#!/usr/bin/env bash
# Runs every test of the workspace, on a fresh machine as on a developer's.
#
# PostgreSQL: uses TEST_DATABASE_URL when it is set; otherwise installs the server if it is
# missing (Debian's package), starts a throwaway cluster on a free loopback port in a temp
# folder, and stops and deletes it on exit. Each test creates its own database on it.
# SQLite needs nothing: it is compiled in. With no arguments it then runs scripts/e2e.sh, the
# end-to-end flow against the real binary; arguments go to `cargo test` and skip that step.
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/pg.sh

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
