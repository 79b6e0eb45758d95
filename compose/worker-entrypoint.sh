#!/bin/sh
# Entry point of the worker image (compose/Dockerfile): run the command, by default
# `cosmic worker`, with COSMIC_WEB_ADVERTISED_HOST set to this container's hostname unless
# it is set. The bind address, COSMIC_WEB_HOST, stays as configured (0.0.0.0 in compose).
#
# Why: Faust advertises http://COSMIC_WEB_ADVERTISED_HOST:COSMIC_WEB_PORT to the other
# workers of its group (its canonical URL). They forward owner-routed table reads there, and
# the group's partition map is keyed by it, so every replica needs an address of its own that
# the others can reach. The hostname resolves to the container's address on the compose
# network.
set -eu
if [ -z "${COSMIC_WEB_ADVERTISED_HOST:-}" ]; then
    COSMIC_WEB_ADVERTISED_HOST="$(hostname)"
    export COSMIC_WEB_ADVERTISED_HOST
fi
exec "$@"
