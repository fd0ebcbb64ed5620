#!/usr/bin/env bash
# The test command (README, .ci/run): one debug build, then every test of the workspace —
# unit and property tests, the port behaviour suites against every backend, and the end-to-end
# tests against the real binary: once on the embedded backends, once on Redis.
#
# Starts the services the tests need — a throwaway redis-server and mosquitto, and Google's
# Pub/Sub and Firestore emulators, each on a free port, unless REDIS_URL / MQTT_BROKER_URL /
# PUBSUB_EMULATOR_HOST / FIRESTORE_EMULATOR_HOST point at running ones — and stops them afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/envelope-router/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
threads="${TEST_THREADS:-8}"

services=$(mktemp -d "${TMPDIR:-/tmp}/er-services.XXXXXX")
cleanup() {
  ./infra/dev/redis.sh stop "$services/redis" || true
  ./infra/dev/pubsub-emulator.sh stop "$services/pubsub" || true
  ./infra/dev/firestore-emulator.sh stop "$services/firestore" || true
  ./infra/dev/mosquitto.sh stop "$services/mosquitto" || true
  rm -rf "$services"
}
trap cleanup EXIT

if [ -z "${REDIS_URL:-}" ]; then
  REDIS_URL=$(./infra/dev/redis.sh start "$services/redis")
fi
export REDIS_URL
if [ -z "${PUBSUB_EMULATOR_HOST:-}" ]; then
  PUBSUB_EMULATOR_HOST=$(./infra/dev/pubsub-emulator.sh start "$services/pubsub")
fi
export PUBSUB_EMULATOR_HOST
if [ -z "${FIRESTORE_EMULATOR_HOST:-}" ]; then
  FIRESTORE_EMULATOR_HOST=$(./infra/dev/firestore-emulator.sh start "$services/firestore")
fi
export FIRESTORE_EMULATOR_HOST
if [ -z "${MQTT_BROKER_URL:-}" ]; then
  MQTT_BROKER_URL=$(./infra/dev/mosquitto.sh start "$services/mosquitto")
fi
export MQTT_BROKER_URL
# Tests that restart their own broker find the binary here.
MOSQUITTO_BIN="${MOSQUITTO_BIN:-$(command -v mosquitto || echo /usr/sbin/mosquitto)}"
export MOSQUITTO_BIN
# Tests that stop and restart their own Redis find the server binary here.
REDIS_SERVER_BIN="${REDIS_SERVER_BIN:-$(command -v redis-server || true)}"
export REDIS_SERVER_BIN
# The bench's PNG plots (checked by its smoke test) draw their text with DejaVu Sans.
if [ ! -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "fonts-dejavu-core missing: installing it from Debian's packages" >&2
    apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fonts-dejavu-core >&2
  else
    echo "the bench plots need fonts-dejavu-core: apt-get install fonts-dejavu-core" >&2
    exit 1
  fi
fi
echo "tests use Redis at $REDIS_URL, Mosquitto at $MQTT_BROKER_URL, the Pub/Sub emulator at $PUBSUB_EMULATOR_HOST and the Firestore emulator at $FIRESTORE_EMULATOR_HOST" >&2

cargo test --workspace --all-features --locked -- --test-threads "$threads"
echo "--- end-to-end suite again on Redis presence, store, rate limits and device tokens ---" >&2
E2E_BACKENDS=redis cargo test --all-features --locked --test e2e -- --test-threads "$threads"
echo "--- deployment files: Dockerfile lint and build step, Terraform consistency ---" >&2
./infra/check-infra.sh
