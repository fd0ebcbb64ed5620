#!/usr/bin/env bash
# The test command (README, .ci/run): one debug build, then every test of the workspace —
# unit and property tests, the port behaviour suites against every backend, and the end-to-end
# tests against the real binary: once on the embedded backends, once on Redis.
#
# Starts the services the tests need (a throwaway redis-server on a free port unless REDIS_URL
# is given) and stops them afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/envelope-router/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
threads="${TEST_THREADS:-8}"

services=$(mktemp -d "${TMPDIR:-/tmp}/er-services.XXXXXX")
cleanup() { ./infra/dev/redis.sh stop "$services/redis" || true; rm -rf "$services"; }
trap cleanup EXIT

if [ -z "${REDIS_URL:-}" ]; then
  REDIS_URL=$(./infra/dev/redis.sh start "$services/redis")
fi
export REDIS_URL
# Tests that stop and restart their own Redis find the server binary here.
REDIS_SERVER_BIN="${REDIS_SERVER_BIN:-$(command -v redis-server || true)}"
export REDIS_SERVER_BIN
echo "tests use Redis at $REDIS_URL" >&2

cargo test --workspace --all-features --locked -- --test-threads "$threads"
echo "--- end-to-end suite again on PRESENCE=redis STORE=redis RATE_LIMIT=redis ---" >&2
E2E_BACKENDS=redis cargo test --all-features --locked --test e2e -- --test-threads "$threads"
