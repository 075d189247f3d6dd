#!/usr/bin/env bash
# The long fuzzing campaign: each target in turn, in libFuzzer's fork mode so it keeps going past
# findings (every crash / memory-cap / timeout input lands in fuzz/artifacts/<target>/), for a
# per-target budget sized to reach about 1,000,000 executions on one core of a 2-core machine.
# Logs: target/fuzz-logs/long/<target>.log; the summary lines are those of scripts/fuzz.sh.
#
#   nohup bash fuzz/long_run.sh > target/fuzz-logs/long.out 2>&1 &
#   SCALE=2 bash fuzz/long_run.sh      # twice the budgets
set -uo pipefail
cd "$(dirname "$0")/.."
SCALE=${SCALE:-1}
# target:seconds (measured rates on this VM: manifest ~100k/s, pickle ~30k/s, config_model ~15k/s,
# torch_zip ~2k/s, safetensors ~1k/s, tokenizer ~0.1-1k/s)
BUDGETS=${BUDGETS:-"pickle:90 manifest:30 config_model:240 torch_zip:600 safetensors:900 tokenizer:900"}
export FUZZ_LOGS=${FUZZ_LOGS:-target/fuzz-logs/long}
export FUZZ_FLAGS="-fork=1 -ignore_crashes=1 -ignore_ooms=1 -ignore_timeouts=1 ${FUZZ_FLAGS:-}"
status=0
for tb in $BUDGETS; do
  t=${tb%%:*}
  s=$(( ${tb##*:} * SCALE ))
  bash scripts/fuzz.sh "$s" "$t" || status=1
done
exit $status
