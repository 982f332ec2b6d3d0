#!/usr/bin/env bash
# Make the machine an ordinary workstation for the tests: one ordinary user besides root in the
# group that owns the rootful engine's socket (docker), as on a machine where someone uses Docker
# without sudo. qsandbox then warns, truthfully, before every run ("users qsbx-carol in group docker
# can reach the engine ..."), and the suite must pass with that warning present (issue 29). CI runs
# this before the tests (.ci/run). Needs root; idempotent. Prints the user's name.
set -euo pipefail
USER_NAME=${QSANDBOX_TEST_DOCKER_MEMBER:-qsbx-carol}
say() { printf 'docker-group-member: %s\n' "$*" >&2; }

[ "$(id -u)" = 0 ] || { say "needs root (it creates a user)"; exit 1; }
sock=/var/run/docker.sock
group=$(stat -c %G "$sock" 2>/dev/null) || { say "no rootful engine socket at $sock"; exit 1; }
[ "$group" != root ] || { say "$sock belongs to group root: there is no docker group to join"; exit 1; }
id "$USER_NAME" >/dev/null 2>&1 || useradd -m -s /bin/bash "$USER_NAME"
id -nG "$USER_NAME" | tr ' ' '\n' | grep -qx "$group" || usermod -aG "$group" "$USER_NAME"
echo "$USER_NAME"
