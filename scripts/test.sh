#!/usr/bin/env bash
# The full test suite, as a newcomer runs it on a fresh machine:
#   1. installs and starts Apache Kafka (KRaft) and ClickHouse under .local/ (idempotent),
#   2. runs every Rust test (unit, integration, end-to-end) against those real services,
#      then the chaos test and the bad-input corpus with their summaries printed,
#   3. checks every migration and view query on a current ClickHouse (chdb, in-process),
#   4. checks formatting and lints.
# If a service cannot start, this fails loudly with the reason; nothing is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)
step() { printf '\n==> %s\n' "$*"; }

# Disk: a full debug build of the workspace and its test binaries takes ~6 GB.
avail_kb=$(df -Pk . | awk 'NR==2 {print $4}')
printf 'disk available here: %s MB\n' "$(( avail_kb / 1024 ))"
if (( avail_kb < 8 * 1024 * 1024 )); then
  echo "warning: less than 8 GB free; the build may fail with linker errors (bus error / no space)" >&2
fi
# CI builds once from scratch: incremental caches would only cost disk and time.
if [[ -n "${CI:-}" ]]; then export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"; fi

step "infrastructure"
deploy/local/infra.sh up
deploy/local/infra.sh status

# Point the tests at the ports the scripts used (they honour the same overrides).
export ROLLCALL_KAFKA__BROKERS="${ROLLCALL_KAFKA__BROKERS:-127.0.0.1:${ROLLCALL_KAFKA_PORT:-19092}}"
export ROLLCALL_CLICKHOUSE__URL="${ROLLCALL_CLICKHOUSE__URL:-http://127.0.0.1:${ROLLCALL_CLICKHOUSE_HTTP_PORT:-18123}}"

step "python environment for the current-ClickHouse check"
venv="${ROLLCALL_LOCAL_DIR:-$PWD/.local}/venv"
if [[ ! -x "$venv/bin/python" ]]; then
  python3 -m venv "$venv" 2>/dev/null || { command -v apt-get >/dev/null && apt-get install -y -q python3-venv >/dev/null && python3 -m venv "$venv"; }
fi
if ! cmp -s tests/ddl/requirements.txt "$venv/.requirements.txt"; then
  "$venv/bin/pip" install -q --disable-pip-version-check -r tests/ddl/requirements.txt
  cp tests/ddl/requirements.txt "$venv/.requirements.txt"
fi

step "browser for the report test"
if ! command -v chromium >/dev/null; then
  echo "installing Debian's chromium (headless report screenshots)"
  [[ -n "$(ls -A /var/lib/apt/lists 2>/dev/null | grep -v lock || true)" ]] || apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium >/dev/null
fi

step "cargo test (workspace)"
# The chaos test and the bad-input corpus run after, on their own, so that what they
# print (the chaos summary: kills, restarts, rows compared; a line per corpus case)
# shows even when they pass.
cargo test --workspace --locked --no-fail-fast -- \
  --skip chaos_kills_and_restarts_lose_nothing_and_count_nothing_twice --skip bad_input_corpus

step "chaos test (docs/chaos.md; ROLLCALL_CHAOS=long for the longer mode)"
cargo test -p rollcall-e2e --test chaos --locked -- --nocapture

step "bad-input corpus (docs/corpus.md)"
cargo test -p rollcall-e2e --test corpus --locked -- --nocapture

step "DDL and view queries on current ClickHouse (chdb)"
"$venv/bin/python" -m pytest -q tests/ddl

step "format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings

printf '\nall tests passed in %ss\n' "$(( $(date +%s) - started ))"
