# Sourced by the emulator scripts beside it: starts a JVM service on a free port, trying
# another port when the one picked was taken before the service could bind it.
#
#   start_on_free_port <name> <log> <pgid file> <start function> <ready function>
#
# `<start function> <port>` must `exec setsid` the service (so its process group is its pid,
# written to <pgid file>); `<ready function> <port>` answers whether it serves. Prints
# 127.0.0.1:<port> once ready; otherwise prints the log to stderr and returns 1.

start_on_free_port() {
  local name=$1 log=$2 pgid=$3 start=$4 ready=$5 port
  for _ in 1 2 3; do
    port=$("$(dirname "${BASH_SOURCE[0]}")/free-port.sh")
    "$start" "$port" >"$log" 2>&1 < /dev/null &
    echo $! > "$pgid"
    for _ in $(seq 1 300); do
      if "$ready" "$port"; then
        echo "127.0.0.1:$port"
        return 0
      fi
      if grep -q "Address already in use" "$log" 2>/dev/null; then break; fi
      sleep 0.1
    done
    kill -- -"$(cat "$pgid")" 2>/dev/null || true
    grep -q "Address already in use" "$log" 2>/dev/null || break
    echo "the $name's port $port was taken; trying another" >&2
  done
  echo "the $name did not start; log:" >&2
  cat "$log" >&2
  return 1
}
