#!/usr/bin/env bash
# Starts and stops a throwaway Mosquitto broker on a free port with a generated config.
#   infra/dev/mosquitto.sh start <dir>   → prints mqtt://127.0.0.1:<port>
#   infra/dev/mosquitto.sh stop <dir>
# Installs Debian's mosquitto when missing (needs root).
set -euo pipefail

ensure_installed() {
  if command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ]; then return; fi
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "mosquitto missing: installing it from Debian's packages" >&2
    apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto >&2
  fi
  command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || {
    echo "mosquitto is required for the tests: install it (apt-get install mosquitto) or set MQTT_BROKER_URL" >&2
    exit 1
  }
}

mosquitto_bin() { command -v mosquitto 2>/dev/null || echo /usr/sbin/mosquitto; }

free_port() { "$(dirname "$0")/free-port.sh"; }

case "${1:-}" in
  start)
    dir=${2:?usage: mosquitto.sh start <dir>}
    ensure_installed
    mkdir -p "$dir"
    port=$(free_port)
    cat > "$dir/mosquitto.conf" <<CONF
listener $port 127.0.0.1
allow_anonymous true
user $(id -un)
persistence false
log_dest file $dir/mosquitto.log
pid_file $dir/mosquitto.pid
CONF
    "$(mosquitto_bin)" -d -c "$dir/mosquitto.conf"
    for _ in $(seq 1 100); do
      if (echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "mqtt://127.0.0.1:$port"
        exit 0
      fi
      sleep 0.05
    done
    echo "mosquitto did not start; log:" >&2; cat "$dir/mosquitto.log" >&2 || true; exit 1
    ;;
  stop)
    dir=${2:?usage: mosquitto.sh stop <dir>}
    "$(dirname "$0")/stop-service.sh" "$dir" mosquitto.pid
    ;;
  *) echo "usage: mosquitto.sh start|stop <dir>" >&2; exit 2 ;;
esac
