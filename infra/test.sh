#!/usr/bin/env bash
# The test command (README, .ci/run): one debug build, then every test of the workspace —
# unit and property tests, the port behaviour suites against every backend, and the end-to-end
# tests that run the real binary on random ports.
#
# Services a suite needs are started by the scripts beside this one before the tests run.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/envelope-router/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

cargo test --workspace --all-features --locked -- --test-threads "${TEST_THREADS:-8}"
