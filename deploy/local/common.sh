# Shared settings for the local infrastructure scripts. Sourced, not run.
# Everything lives under one project-local directory that git ignores; every port can be
# overridden from the environment, and every service listens on loopback only.
set -euo pipefail

ROLLCALL_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
ROLLCALL_LOCAL_DIR="${ROLLCALL_LOCAL_DIR:-$ROLLCALL_ROOT/.local}"

ROLLCALL_KAFKA_PORT="${ROLLCALL_KAFKA_PORT:-19092}"
ROLLCALL_KAFKA_CONTROLLER_PORT="${ROLLCALL_KAFKA_CONTROLLER_PORT:-19093}"
ROLLCALL_CLICKHOUSE_HTTP_PORT="${ROLLCALL_CLICKHOUSE_HTTP_PORT:-18123}"
ROLLCALL_CLICKHOUSE_TCP_PORT="${ROLLCALL_CLICKHOUSE_TCP_PORT:-19000}"

mkdir -p "$ROLLCALL_LOCAL_DIR"

log() { printf '[%s] %s\n' "$(basename "$0")" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Whether something accepts TCP connections on 127.0.0.1:$1.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Whether the process in pid file $1 is alive.
pid_alive() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

# apt-get install, running `apt-get update` once first if the package lists are empty.
apt_install() {
  command -v apt-get >/dev/null || die "apt-get not found; install $* by hand"
  if [[ -z "$(ls -A /var/lib/apt/lists 2>/dev/null | grep -v lock || true)" ]] || ! apt-cache show "$1" >/dev/null 2>&1; then
    log "apt-get update"
    apt-get update -q >/dev/null
  fi
  log "apt-get install $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >/dev/null
}

# Stop the process in pid file $1 (TERM, then KILL after $2 seconds).
stop_pid() {
  local pidfile="$1" grace="${2:-30}"
  if ! pid_alive "$pidfile"; then rm -f "$pidfile"; return 0; fi
  local pid; pid="$(cat "$pidfile")"
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 "$((grace * 10))"); do
    kill -0 "$pid" 2>/dev/null || { rm -f "$pidfile"; return 0; }
    sleep 0.1
  done
  log "pid $pid did not stop in ${grace}s; killing"
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$pidfile"
}
