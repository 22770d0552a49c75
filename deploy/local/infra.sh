#!/usr/bin/env bash
# The whole local infrastructure: Apache Kafka (KRaft) and ClickHouse.
# usage: deploy/local/infra.sh up|down|status
#   up      install what is missing, start both, wait until they answer (idempotent)
#   down    stop both (data is kept under .local/)
#   status  print what runs, with versions and ports; exit 3 if something is down
set -euo pipefail
here="$(dirname "${BASH_SOURCE[0]}")"
case "${1:-}" in
  up) "$here/kafka.sh" start; "$here/clickhouse.sh" start ;;
  down) "$here/kafka.sh" stop; "$here/clickhouse.sh" stop ;;
  status) rc=0; "$here/kafka.sh" status || rc=$?; "$here/clickhouse.sh" status || rc=$?; exit $rc ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
