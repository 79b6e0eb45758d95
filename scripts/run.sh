#!/usr/bin/env bash
# The main job, from nothing: install, start the local stack, create the topics, run a
# worker and a small demo event source, and print the URLs to open. Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/bootstrap.sh
exec .venv/bin/cosmic run "$@"
