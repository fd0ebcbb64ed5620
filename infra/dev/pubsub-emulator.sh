#!/usr/bin/env bash
# Starts and stops Google's Pub/Sub emulator for tests and local clusters.
#   infra/dev/pubsub-emulator.sh start <dir>   → prints host:port; pid (process group) in <dir>
#   infra/dev/pubsub-emulator.sh stop <dir>
# The emulator runs in its own process group, so stopping it also stops its JVM.
set -euo pipefail

find_emulator() {
  if [ -n "${PUBSUB_EMULATOR_BIN:-}" ]; then echo "$PUBSUB_EMULATOR_BIN"; return; fi
  for candidate in \
    /usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator \
    "$(command -v gcloud >/dev/null 2>&1 && dirname "$(readlink -f "$(command -v gcloud)")")/../platform/pubsub-emulator/bin/cloud-pubsub-emulator"; do
    if [ -x "$candidate" ]; then echo "$candidate"; return; fi
  done
  echo "the Pub/Sub emulator is not installed: apt-get install google-cloud-cli-pubsub-emulator (or gcloud components install pubsub-emulator); it needs java" >&2
  exit 1
}

free_port() { "$(dirname "$0")/free-port.sh"; }

case "${1:-}" in
  start)
    dir=${2:?usage: pubsub-emulator.sh start <dir>}
    emulator=$(find_emulator)
    command -v java >/dev/null 2>&1 || { echo "the Pub/Sub emulator needs java (apt-get install default-jre-headless)" >&2; exit 1; }
    mkdir -p "$dir"
    # A port can still be taken between the pick and the JVM's bind: then try another.
    for _ in 1 2 3; do
      port=$(free_port)
      setsid "$emulator" --host=127.0.0.1 --port="$port" >"$dir/pubsub.log" 2>&1 < /dev/null &
      echo $! > "$dir/pubsub.pgid"
      for _ in $(seq 1 300); do
        if grep -q "Server started" "$dir/pubsub.log" 2>/dev/null; then
          echo "127.0.0.1:$port"
          exit 0
        fi
        if grep -q "Address already in use" "$dir/pubsub.log" 2>/dev/null; then break; fi
        sleep 0.1
      done
      kill -- -"$(cat "$dir/pubsub.pgid")" 2>/dev/null || true
      grep -q "Address already in use" "$dir/pubsub.log" 2>/dev/null || break
      echo "the Pub/Sub emulator's port $port was taken; trying another" >&2
    done
    echo "the Pub/Sub emulator did not start; log:" >&2; cat "$dir/pubsub.log" >&2
    exit 1
    ;;
  stop)
    dir=${2:?usage: pubsub-emulator.sh stop <dir>}
    "$(dirname "$0")/stop-service.sh" "$dir" pubsub.pgid --group
    ;;
  *) echo "usage: pubsub-emulator.sh start|stop <dir>" >&2; exit 2 ;;
esac
