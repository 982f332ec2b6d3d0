#!/usr/bin/env bash
# Make this machine ready for qsandbox, idempotently: a Docker engine that answers, a venv with
# qsandbox in .venv, and the sandbox image qsandbox:<version>. Used by the README's two commands
# and by CI (.ci/run). Safe to re-run; each step is skipped when already done.
#
# QSANDBOX_BASE_IMAGE overrides the base; otherwise python:3.12-slim if it can be pulled, else an
# offline base made from the OS packages (`qsandbox build --offline-base`: debootstrap, then import).
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'setup: %s\n' "$*" >&2; }

# 1. A Docker engine. On a fresh Debian machine only the client exists: install and start dockerd.
if ! docker info >/dev/null 2>&1; then
  if ! command -v dockerd >/dev/null 2>&1; then
    [ "$(id -u)" = 0 ] || { say "no Docker engine and not root: install Docker or Podman, then re-run"; exit 1; }
    say "installing Docker Engine from the Debian packages"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null
  fi
  if ! docker info >/dev/null 2>&1; then
    say "starting dockerd (log: /var/log/qsandbox-dockerd.log)"
    bash scripts/dockerd.sh start
  fi
fi
say "engine: $(docker version --format '{{.Server.Version}} (API {{.Server.APIVersion}})')"

# The remote-engine tests run a real sshd on loopback and the ssh client (tests/docker/test_remote_engines.py).
if [ "$(id -u)" = 0 ] && { [ ! -x /usr/sbin/sshd ] || ! command -v ssh >/dev/null 2>&1; }; then
  say "installing openssh-server and openssh-client (the ssh:// engine tests)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server openssh-client >/dev/null
fi

# 2. The launcher, in a venv. The extras carry the emulated platform's and the tests' needs.
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
say "installing qsandbox into .venv"
.venv/bin/pip install -q -e '.[sandbox,platform,test,lint]' 2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2)

# 3. The image. Rebuilding is cheap when nothing changed (layer cache).
build=(--base-image "${QSANDBOX_BASE_IMAGE:-python:3.12-slim}")
if [ -z "${QSANDBOX_BASE_IMAGE:-}" ] \
  && ! docker image inspect python:3.12-slim >/dev/null 2>&1 && ! docker pull -q python:3.12-slim >/dev/null 2>&1; then
  say "python:3.12-slim cannot be pulled (no registry): building on the offline base"
  if ! docker image inspect qsandbox-base:bookworm >/dev/null 2>&1 && ! command -v debootstrap >/dev/null \
    && [ ! -x /usr/sbin/debootstrap ] && [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
  fi
  build=(--offline-base)
fi
.venv/bin/qsandbox build "${build[@]}" 2> >(grep -E '^(Step|qsandbox|setup|offline base)' >&2)
