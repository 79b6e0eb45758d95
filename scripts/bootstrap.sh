#!/usr/bin/env bash
# Install everything the project needs, from nothing, idempotently:
#   Java 17 + Maven (Kafka is fetched from Maven Central by `cosmic stack up`),
#   RabbitMQ, kcat and chromium (dashboard browser test) from Debian's packages, a Python venv with pinned dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[bootstrap] %s\n' "$*"; }
die() { printf '[bootstrap] error: %s\n' "$*" >&2; exit 1; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi
fi

apt_updated=0
apt_install() {
  command -v apt-get >/dev/null 2>&1 || die "apt-get not found: install these packages by hand: $*"
  if [ "$(id -u)" -ne 0 ] && [ -z "$SUDO" ]; then
    die "need root (or sudo) to install: $* — run: apt-get install -y $*"
  fi
  if [ "$apt_updated" -eq 0 ]; then
    log "apt-get update"
    $SUDO apt-get update -q >/dev/null || die "apt-get update failed"
    apt_updated=1
  fi
  # Keep the packages' own init scripts from starting system-wide services:
  # the stack runs its own RabbitMQ node under .data/.
  local policy=/usr/sbin/policy-rc.d created_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
    $SUDO chmod +x "$policy"
    created_policy=1
  fi
  log "apt-get install $*"
  local rc=0
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >/tmp/cosmic-apt.log 2>&1 || rc=$?
  [ "$created_policy" -eq 1 ] && $SUDO rm -f "$policy"
  [ "$rc" -eq 0 ] || { tail -20 /tmp/cosmic-apt.log >&2; die "apt-get install $* failed"; }
}

need=()
command -v java >/dev/null 2>&1 || need+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || need+=(maven)
[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || command -v rabbitmq-server >/dev/null 2>&1 || need+=(rabbitmq-server)
command -v kcat >/dev/null 2>&1 || need+=(kcat)
# headless Chromium for the dashboard's browser test (tests/integration/test_dashboard.py)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
if [ "${#need[@]}" -gt 0 ]; then apt_install "${need[@]}"; fi

PY="${PYTHON:-python3}"
command -v "$PY" >/dev/null 2>&1 || die "python3 not found: install Python 3.11+ (apt-get install -y python3 python3-venv)"
"$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' \
  || die "Python 3.11+ is required, found $("$PY" --version 2>&1)"

if [ ! -x .venv/bin/python ]; then
  log "creating .venv"
  "$PY" -m venv .venv || die "python3 -m venv failed (apt-get install -y python3-venv)"
fi
stamp=.venv/.cosmic-installed
want="$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  log "installing Python dependencies (pinned by constraints.txt)"
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q -c constraints.txt -e '.[test]' >/tmp/cosmic-pip.log 2>&1 \
    || { tail -30 /tmp/cosmic-pip.log >&2; die "pip install failed (full log: /tmp/cosmic-pip.log)"; }
  echo "$want" > "$stamp"
fi
log "ready: $(java -version 2>&1 | head -1), $(mvn -v 2>/dev/null | head -1 | sed 's/\x1b\[[0-9;]*m//g'), $(.venv/bin/python --version)"
