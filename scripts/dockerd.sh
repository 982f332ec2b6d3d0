#!/usr/bin/env bash
# Start or restart the local Docker engine that scripts/setup.sh runs (dockerd started by
# hand, as on CI machines without systemd). Used by setup.sh, and by the tests that prove a run
# survives the engine restarting or crashing mid-run without leaving the key anywhere.
#
#   scripts/dockerd.sh start            start dockerd unless one answers; wait until it does
#   scripts/dockerd.sh restart          stop it cleanly (SIGTERM, as `systemctl restart` does), start again
set -euo pipefail
LOG=/var/log/qsandbox-dockerd.log
say() { printf 'dockerd.sh: %s\n' "$*" >&2; }

start() {
  docker info >/dev/null 2>&1 && return 0
  [ "$(id -u)" = 0 ] || { say "not root: cannot start dockerd"; exit 1; }
  nohup dockerd >>"$LOG" 2>&1 &
  for _ in $(seq 120); do docker info >/dev/null 2>&1 && return 0; sleep 0.5; done
  say "dockerd did not come up; see $LOG"
  exit 1
}

pid() { pidof dockerd || { say "no dockerd process to stop"; exit 1; }; }

case "${1:-}" in
  start) start ;;
  restart)
    if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet docker 2>/dev/null; then
      systemctl restart docker
    else
      p=$(pid); kill -TERM "$p"
      while kill -0 "$p" 2>/dev/null; do sleep 0.2; done
    fi
    start ;;
  *) say "usage: scripts/dockerd.sh start | restart"; exit 2 ;;
esac
