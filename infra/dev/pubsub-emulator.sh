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

# shellcheck source=start-on-free-port.sh
source "$(dirname "$0")/start-on-free-port.sh"

case "${1:-}" in
  start)
    dir=${2:?usage: pubsub-emulator.sh start <dir>}
    emulator=$(find_emulator)
    command -v java >/dev/null 2>&1 || { echo "the Pub/Sub emulator needs java (apt-get install default-jre-headless)" >&2; exit 1; }
    mkdir -p "$dir"
    run() { exec setsid "$emulator" --host=127.0.0.1 --port="$1"; }
    serves() { grep -q "Server started" "$dir/pubsub.log" 2>/dev/null; }
    start_on_free_port "Pub/Sub emulator" "$dir/pubsub.log" "$dir/pubsub.pgid" run serves
    ;;
  stop)
    dir=${2:?usage: pubsub-emulator.sh stop <dir>}
    "$(dirname "$0")/stop-service.sh" "$dir" pubsub.pgid --group
    ;;
  *) echo "usage: pubsub-emulator.sh start|stop <dir>" >&2; exit 2 ;;
esac
