#!/bin/sh
# Entry point of the worker image (compose/Dockerfile): run the command, by default
# `cosmic worker`, with COSMIC_WEB_HOST set to this container's hostname unless it is set.
#
# Why not 0.0.0.0: Faust advertises http://COSMIC_WEB_HOST:COSMIC_WEB_PORT to the other
# workers of its group (its canonical URL). They forward owner-routed table reads there, and
# the group's partition map is keyed by it, so every replica needs an address of its own that
# the others can reach. The hostname resolves to the container's address on the compose
# network; the web server listens there (published ports and the proxy reach it too).
#
# CLI commands that talk to the local worker use the same wrapper:
#   docker compose exec worker cosmic-entrypoint cosmic table get job_state <job_id>
set -eu
if [ -z "${COSMIC_WEB_HOST:-}" ]; then
    COSMIC_WEB_HOST="$(hostname)"
    export COSMIC_WEB_HOST
fi
exec "$@"
