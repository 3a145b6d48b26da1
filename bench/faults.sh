#!/usr/bin/env bash
# Long forms of the fault tests, printing the figures recorded in RELIABILITY.md.
# The same tests run in the suite with fewer cycles; here they run long.
#   bench/faults.sh            # all: SIGKILL loop (200 cycles), fleet kill loop, PostgreSQL restart
#   CYCLES=50 bench/faults.sh  # shorter
# Needs PostgreSQL at REFRESHD_TEST_DATABASE_URL (default: the CI database) for the fleet parts.
set -euo pipefail
cd "$(dirname "$0")/.."
export REFRESHD_TEST_DATABASE_URL=${REFRESHD_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}
cycles=${CYCLES:-200}
cargo build --release --tests --quiet

echo "== SIGKILL loop on SQLite: 10,000 subjects, ${cycles} kills, a kill every 0.5-3 s"
REFRESHD_FAULT_SUBJECTS=10000 REFRESHD_FAULT_CYCLES=$cycles \
  cargo test --release --quiet -p refreshd --test faults sigkill_loop -- --nocapture 2>&1 | grep -E "FIGURES|test result|panicked"

echo "== Two nodes on PostgreSQL, killing them in turn: $((cycles / 4)) kills"
REFRESHD_FAULT_SUBJECTS=200 REFRESHD_FAULT_CYCLES=$((cycles / 4)) \
  cargo test --release --quiet -p refreshd --test fleet killing_nodes -- --nocapture 2>&1 | grep -E "FIGURES|test result|panicked"

echo "== PostgreSQL restarted under two running nodes"
cargo test --release --quiet -p refreshd --test fleet postgres_restart_mid_run -- --ignored --nocapture 2>&1 | grep -E "FIGURES|test result|panicked"

echo "== One-hour outage and clock jumps (suite forms; they are already exact)"
cargo test --release --quiet -p refreshd --test faults t5_one_hour_outage 2>&1 | grep -E "test result|panicked"
cargo test --release --quiet -p refreshd-api --test manual_clock t5_clock_jumps 2>&1 | grep -E "test result|panicked"
