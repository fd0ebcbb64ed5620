#!/usr/bin/env bash
# Starts and stops Google's Firestore emulator (native mode) for tests and local clusters.
#   infra/dev/firestore-emulator.sh start <dir>   → prints host:port; process group in <dir>
#   infra/dev/firestore-emulator.sh stop <dir>
# The emulator runs in its own process group, so stopping it also stops its JVM.
set -euo pipefail

find_emulator() {
  if [ -n "${FIRESTORE_EMULATOR_BIN:-}" ]; then echo "$FIRESTORE_EMULATOR_BIN"; return; fi
  for candidate in \
    /usr/lib/google-cloud-sdk/platform/cloud-firestore-emulator/cloud_firestore_emulator \
    "$(command -v gcloud >/dev/null 2>&1 && dirname "$(readlink -f "$(command -v gcloud)")")/../platform/cloud-firestore-emulator/cloud_firestore_emulator"; do
    if [ -x "$candidate" ]; then echo "$candidate"; return; fi
  done
  echo "the Firestore emulator is not installed: apt-get install google-cloud-cli-firestore-emulator (or gcloud components install cloud-firestore-emulator); it needs java" >&2
  exit 1
}

# shellcheck source=start-on-free-port.sh
source "$(dirname "$0")/start-on-free-port.sh"

case "${1:-}" in
  start)
    dir=${2:?usage: firestore-emulator.sh start <dir>}
    emulator=$(find_emulator)
    command -v java >/dev/null 2>&1 || { echo "the Firestore emulator needs java (apt-get install default-jre-headless)" >&2; exit 1; }
    mkdir -p "$dir"
    run() { exec setsid "$emulator" start --host=127.0.0.1 --port="$1" --database-mode=firestore-native; }
    serves() { curl -s -o /dev/null "http://127.0.0.1:$1/" 2>/dev/null; }
    start_on_free_port "Firestore emulator" "$dir/firestore.log" "$dir/firestore.pgid" run serves
    ;;
  stop)
    dir=${2:?usage: firestore-emulator.sh stop <dir>}
    "$(dirname "$0")/stop-service.sh" "$dir" firestore.pgid --group
    ;;
  *) echo "usage: firestore-emulator.sh start|stop <dir>" >&2; exit 2 ;;
esac
