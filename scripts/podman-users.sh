#!/usr/bin/env bash
# Make two ordinary OS users, each with their own rootless Podman serving the Docker API and the
# qsandbox image in their own storage: the setting of tests/docker/test_rootless_users.py (two
# people on one lab machine, neither in the docker group). Needs root and scripts/setup.sh first.
# Idempotent. Prints one line per user: NAME UID DOCKER_HOST.
#
# The users run qsandbox from /opt/qsandbox-users, a venv on the system Python that every user can
# read (the project's .venv may sit on a Python under /root).
set -euo pipefail
cd "$(dirname "$0")/.."
USERS=(${QSANDBOX_TEST_USERS:-qsbx-alice qsbx-bob})
VENV=/opt/qsandbox-users
IMAGE=$(.venv/bin/python -c 'from qsandbox.launcher.core.settings import IMAGE; print(IMAGE)')
say() { printf 'podman-users: %s\n' "$*" >&2; }

[ "$(id -u)" = 0 ] || { say "needs root (it creates users)"; exit 1; }
if ! command -v podman >/dev/null || ! command -v newuidmap >/dev/null || ! command -v slirp4netns >/dev/null || [ ! -x /usr/libexec/podman/catatonit ]; then
  say "installing rootless Podman from the Debian packages"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman uidmap slirp4netns fuse-overlayfs catatonit >/dev/null
fi
# slirp4netns (rootless networking) opens /dev/net/tun as the user; Debian's default is root-only here.
chmod 0666 /dev/net/tun

# Reinstalled whenever the source differs from what was installed (any checkout, any mtime).
sum=$(tar -c --sort=name --mtime=@0 --owner=0 --group=0 --exclude=__pycache__ --exclude="*.egg-info" src pyproject.toml | sha256sum)
if [ "$(cat "$VENV/.source-sum" 2>/dev/null)" != "$sum" ]; then
  say "installing qsandbox into $VENV"
  /usr/bin/python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q . 2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2)
  echo "$sum" >"$VENV/.source-sum"
fi

want=$(docker image inspect --format '{{.Id}}' "$IMAGE" | sed 's/^sha256://')
for u in "${USERS[@]}"; do
  id "$u" >/dev/null 2>&1 || useradd -m -s /bin/bash "$u"
  uid=$(id -u "$u")
  grep -q "^$u:" /etc/subuid || usermod --add-subuids "$((100000 + uid * 65536))-$((100000 + uid * 65536 + 65535))" "$u"
  grep -q "^$u:" /etc/subgid || usermod --add-subgids "$((100000 + uid * 65536))-$((100000 + uid * 65536 + 65535))" "$u"
  run="/run/user/$uid"
  install -d -m 0700 -o "$u" -g "$u" "$run" "$run/podman"
  as_user() { runuser -u "$u" -- env HOME="/home/$u" XDG_RUNTIME_DIR="$run" "$@"; }
  sock="$run/podman/podman.sock"
  # Podman 4.3 falls back to the vfs driver here (a full copy of the image per container, 20 s a
  # run); the kernel supports rootless overlay, so ask for it.
  conf="/home/$u/.config/containers/storage.conf"
  if [ ! -f "$conf" ]; then
    install -d -o "$u" -g "$u" "/home/$u/.config" "/home/$u/.config/containers"
    printf '[storage]\ndriver = "overlay"\n' >"$conf"
    chown "$u:" "$conf"
  fi
  if [ "$(as_user podman info --format '{{.Store.GraphDriverName}}' 2>/dev/null)" != overlay ]; then
    pkill -u "$u" -f "podman system service" || true
    as_user podman system reset -f >/dev/null 2>&1
  fi
  if ! as_user curl -sf --unix-socket "$sock" http://d/_ping >/dev/null 2>&1; then
    say "starting $u's rootless Podman API at $sock"
    # From the user's home: the service's working directory is its children's (conmon, runc), and a
    # checkout deleted later would make every container fail to start ("write child: broken pipe").
    cd "/home/$u"
    as_user nohup podman system service --time=0 "unix://$sock" >"/var/log/qsandbox-podman-$u.log" 2>&1 &
    cd "$OLDPWD"
    for _ in $(seq 60); do as_user curl -sf --unix-socket "$sock" http://d/_ping >/dev/null 2>&1 && break; sleep 0.5; done
    as_user curl -sf --unix-socket "$sock" http://d/_ping >/dev/null 2>&1 ||
      { say "$u's Podman API did not come up; see /var/log/qsandbox-podman-$u.log"; exit 1; }
  fi
  if [ "$(as_user podman image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null)" != "$want" ]; then
    say "loading $IMAGE into $u's storage"
    docker save "$IMAGE" | as_user podman load -q >/dev/null
    as_user podman image prune -f >/dev/null  # the image this one replaces
  fi
  echo "$u $uid unix://$sock"
done
