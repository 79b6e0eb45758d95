#!/usr/bin/env bash
# The whole test suite, from nothing: installs what it needs, starts the local stack
# (Kafka, RabbitMQ, schema registry) if it is not running, runs unit, integration and
# reliability tests against it, and stops the stack again if it started it.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/bootstrap.sh
exec .venv/bin/python -m pytest tests -ra --durations=40 "$@"
