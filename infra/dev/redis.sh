#!/usr/bin/env bash
# Starts a throwaway redis-server for the tests on a free port and prints its URL.
#   infra/dev/redis.sh start <dir>   → prints redis://127.0.0.1:<port>/0 ; pid in <dir>/redis.pid
#   infra/dev/redis.sh stop <dir>
# Installs redis-server from Debian's packages when the machine lacks it (needs root).
set -euo pipefail

ensure_installed() {
  if command -v redis-server >/dev/null 2>&1; then return; fi
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "redis-server missing: installing it from Debian's packages" >&2
    apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >&2
  fi
  command -v redis-server >/dev/null 2>&1 || {
    echo "redis-server is required for the tests: install it (apt-get install redis-server) or set REDIS_URL" >&2
    exit 1
  }
}

free_port() { "$(dirname "$0")/free-port.sh"; }

case "${1:-}" in
  start)
    dir=${2:?usage: redis.sh start <dir>}
    ensure_installed
    mkdir -p "$dir"
    port=$(free_port)
    redis-server --bind 127.0.0.1 --port "$port" --save "" --appendonly no \
      --dir "$dir" --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" >&2
    for _ in $(seq 1 100); do
      if redis-cli -p "$port" ping >/dev/null 2>&1; then
        echo "redis://127.0.0.1:$port/0"
        exit 0
      fi
      sleep 0.05
    done
    echo "redis-server did not start; log:" >&2; cat "$dir/redis.log" >&2; exit 1
    ;;
  stop)
    dir=${2:?usage: redis.sh stop <dir>}
    "$(dirname "$0")/stop-service.sh" "$dir" redis.pid
    ;;
  *) echo "usage: redis.sh start|stop <dir>" >&2; exit 2 ;;
esac
