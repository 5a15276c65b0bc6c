#!/usr/bin/env bash
# Run every fuzz target for SECONDS (default 60) on the stable toolchain without a
# sanitizer, starting from the checked-in seeds (fuzz/seeds/TARGET, read only) and
# growing fuzz/corpus/TARGET (ignored by git). A crash, a hang (an input running over
# 10 s) or running out of memory (over 2 GiB) fails the script; libFuzzer then leaves
# the input in fuzz/artifacts/TARGET/. Prints executions per target.
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-60}
targets=(idx cifar checkpoint cli)
cargo fuzz build -s none
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  log=$(mktemp)
  if ! cargo fuzz run -s none "$t" "corpus/$t" "seeds/$t" -- \
      -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 >"$log" 2>&1; then
    tail -n 40 "$log"
    echo "fuzz target $t FAILED (input in fuzz/artifacts/$t/)"
    exit 1
  fi
  echo "fuzz $t: $(grep -E '^Done [0-9]+ runs' "$log" | tail -n 1), $(grep -E 'DONE' "$log" | tail -n 1 | grep -oE 'cov: [0-9]+')"
  rm -f "$log"
done
