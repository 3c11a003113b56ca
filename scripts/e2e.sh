#!/usr/bin/env bash
# The main flow against the real binary, with a fake Google, local disk and S3.
# Uses TEST_DATABASE_URL (PostgreSQL) for the S3 run when it is set; scripts/test.sh sets it.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${NB_TEST_PYTHON:-}" ]; then
  echo "e2e: NB_TEST_PYTHON is not set: run this through scripts/test.sh, which installs the" \
    "Python test tools and sets it" >&2
  exit 1
fi
cargo build --locked --quiet --bin nanobanana
cargo build --locked --quiet -p nb-storage --features testing --example s3-test-server
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
python3 scripts/e2e.py "$target_dir/debug/nanobanana" "$target_dir/debug/examples/s3-test-server"
# The OpenAI-compatible routes through the official SDKs (Python, and Node when it is here),
# and the web console in headless Chromium (Selenium), with screenshots.
"$NB_TEST_PYTHON" scripts/openai_sdk_check.py "$target_dir/debug/nanobanana"
# Webhooks received and verified with the official standardwebhooks package (PyPI).
"$NB_TEST_PYTHON" scripts/webhook_check.py "$target_dir/debug/nanobanana"
cargo build --locked --quiet -p nb-bench --bin fake-google
"$NB_TEST_PYTHON" scripts/console_check.py "$target_dir/debug/nanobanana" \
  "$target_dir/debug/fake-google"
# Three instances behind HAProxy on one PostgreSQL and one S3 bucket: a shared per-minute
# limit, a revocation seen everywhere within a second, a rolling restart losing no request;
# then the same with the limits and key changes in Redis.
./scripts/cluster.sh --check
./scripts/cluster.sh --check --redis
