#!/usr/bin/env bash
# Prints a TCP port on 127.0.0.1 that is free now and lies below the kernel's ephemeral range
# (`net.ipv4.ip_local_port_range`), for the throwaway services the scripts beside this one
# start. A port from the ephemeral range can be taken as the source port of any outgoing
# connection in the seconds a service (a JVM emulator above all) needs to bind it; one below
# the range can only be taken by a process that binds it on purpose.
#   infra/dev/free-port.sh
set -euo pipefail
exec python3 - <<'PY'
import random, socket

try:
    with open("/proc/sys/net/ipv4/ip_local_port_range") as ports:
        ephemeral_low = int(ports.read().split()[0])
except (OSError, ValueError, IndexError):
    ephemeral_low = 32768
low, high = 10000, max(10001, ephemeral_low - 1)

def bindable(port):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False

for _ in range(200):
    port = random.randint(low, high)
    if bindable(port):
        print(port)
        break
else:
    # Every try was taken: fall back to whatever port the kernel hands out.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        print(s.getsockname()[1])
PY
