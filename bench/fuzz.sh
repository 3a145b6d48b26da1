#!/usr/bin/env bash
# Fuzzes every target for SECONDS each (default 600), two at a time, then minimizes the
# corpora in fuzz/corpus (commit them: CI replays them as ordinary tests, see
# crates/fuzz-targets/tests/corpus.rs). Crashes land in fuzz/artifacts/<target>/.
# Needs cargo-fuzz (cargo install cargo-fuzz); on a stable toolchain RUSTC_BOOTSTRAP=1.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds=${1:-600}
export RUSTC_BOOTSTRAP=1
cargo fuzz build --release
run() {
  local target=$1
  cargo fuzz run --release "$target" "corpus/$target" -- \
    -max_total_time="$seconds" -timeout=20 -rss_limit_mb=2048 -print_final_stats=1 \
    > "/tmp/refreshd-fuzz-$target.log" 2>&1 || true
  local crashes
  crashes=$(ls "artifacts/$target" 2>/dev/null | wc -l)
  echo "$target: $(grep -E '^stat::number_of_executed_units' "/tmp/refreshd-fuzz-$target.log" | awk '{print $2}') runs in ${seconds} s, crashes ${crashes}"
}
run form_config & run hhmm_list & wait
run scenario & run destination & wait
for target in form_config hhmm_list scenario destination; do
  cargo fuzz cmin --release "$target" "corpus/$target" > /dev/null 2>&1 || true
done
echo "corpus files: $(find corpus -type f | wc -l)"
