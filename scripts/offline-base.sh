#!/usr/bin/env bash
# Build a base image for qsandbox from the OS package mirror, for machines that cannot pull
# python:3.12-slim (air-gapped labs, CI machines without a registry).
#
#   sudo bash scripts/offline-base.sh [IMAGE_NAME]     (default: qsandbox-base:bookworm)
#   qsandbox build --base-image qsandbox-base:bookworm
#
# debootstrap makes a minimal Debian with python3 and venv; the host's CA bundle is copied in so
# that pip inside `docker build` works behind a TLS-intercepting proxy. Needs root, debootstrap
# and a running Docker engine.
set -euo pipefail
name=${1:-qsandbox-base:bookworm}
suite=${QSANDBOX_BASE_SUITE:-bookworm}
if docker image inspect "$name" >/dev/null 2>&1; then
  echo "offline base: $name already present"
  exit 0
fi
if ! command -v debootstrap >/dev/null; then
  [ "$(id -u)" = 0 ] || { echo "offline base: needs root and debootstrap (apt-get install debootstrap)" >&2; exit 1; }
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi
root=$(mktemp -d /var/tmp/qsandbox-base.XXXXXX)
trap 'rm -rf "$root"' EXIT
echo "offline base: debootstrap $suite into $root (about a minute)"
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates "$suite" "$root" >/dev/null
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
  # The host's bundle includes any proxy CA the host trusts; pip in the image build needs it.
  cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
fi
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
# mktemp made the root 0700, and the archive carries that mode for "/": Docker ignores it, but
# Podman applies it, and then no non-root user can exec anything in the image.
chmod 0755 "$root"
echo "offline base: importing as $name"
tar -C "$root" -c . | docker import -c 'ENV LANG=C.UTF-8' -c 'CMD ["python3"]' - "$name" >/dev/null
echo "offline base: $name ready"
