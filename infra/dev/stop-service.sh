#!/usr/bin/env bash
# Stops a throwaway service started by one of the scripts beside this one and deletes its
# folder: signals the process named in <dir>/<pidfile> (with --group, its whole process
# group), waits up to 10 s for it to exit, so it writes nothing more into the folder (a
# server logging its shutdown while the folder is removed leaves it behind), then removes it.
#   infra/dev/stop-service.sh <dir> <pidfile> [--group]
set -euo pipefail
dir=${1:?usage: stop-service.sh <dir> <pidfile> [--group]}
pidfile=${2:?usage: stop-service.sh <dir> <pidfile> [--group]}
if [ -f "$dir/$pidfile" ]; then
  target=$(cat "$dir/$pidfile")
  if [ "${3:-}" = --group ]; then target="-$target"; fi
  kill -- "$target" 2>/dev/null || true
  for _ in $(seq 100); do
    kill -0 -- "$target" 2>/dev/null || break
    sleep 0.1
  done
fi
rm -rf "$dir"
