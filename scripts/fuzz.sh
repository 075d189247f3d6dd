#!/usr/bin/env bash
# Builds the cargo-fuzz targets in fuzz/ and runs each for a fixed time budget.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     (default: 15 s each, all six targets)
#
# Fails (non-zero) if any target crashes, panics, trips a memory cap or times out on an input; the
# input is saved under fuzz/artifacts/<target>/ and the log under target/fuzz-logs/<target>.log.
# Prints, per target, the executions and the result.
#
# Toolchain: the stable one. `--sanitizer none` needs no -Z flag and no nightly (cargo fuzz's default,
# AddressSanitizer, needs -Zsanitizer and so nightly; FUZZ_TOOLCHAIN=+nightly FUZZ_SANITIZER=address
# selects it, but CI does not use it). `-a` turns on debug assertions and overflow checks, so
# wrapping arithmetic is a finding too. Needs cargo-fuzz (scripts/setup.sh) and a C++ compiler
# (libfuzzer-sys builds libFuzzer with the system g++).
#
# Caps (same numbers as fuzz/src/lib.rs, whose allocator enforces them in every build):
#   -rss_limit_mb=1536   the whole process; polled by libFuzzer in every build.
#   -malloc_limit_mb=1024 one allocation; libFuzzer checks it only in sanitizer builds, the
#                        allocator in fuzz/src/lib.rs in all builds. Inputs are at most 1 MiB, so
#                        1 GiB in one allocation is >1000x amplification: a memory bomb.
#   -timeout=10          seconds per input. The slowest legitimate input (a 0.5 MB weights file
#                        built into a model and run for 3 tokens, or the 400 KB demo tokenizer)
#                        takes well under 50 ms; 10 s is 200x that and catches hangs and
#                        super-linear blowups without flagging a loaded CI machine.
# Environment: FUZZ_TOOLCHAIN, FUZZ_SANITIZER (default none), FUZZ_LOGS (log folder, default
# target/fuzz-logs), FUZZ_FLAGS (extra libFuzzer flags), FUZZ_BUILD=0 (skip the build).
# Targets run one after another. A long campaign that keeps going past findings uses libFuzzer's
# fork mode (fuzz/long_run.sh does), e.g.
#   FUZZ_FLAGS="-fork=1 -ignore_crashes=1 -ignore_ooms=1 -ignore_timeouts=1" scripts/fuzz.sh 900 tokenizer
# which saves every finding under fuzz/artifacts/ and reports them as oom/timeout/crash counts.
set -euo pipefail
cd "$(dirname "$0")/.."

SECS=${1:-15}
shift || true
TARGETS=("$@")
[ ${#TARGETS[@]} -eq 0 ] && TARGETS=(pickle torch_zip safetensors config_model manifest tokenizer)
TC=${FUZZ_TOOLCHAIN:-}
SAN=${FUZZ_SANITIZER:-none}
LOGS=${FUZZ_LOGS:-target/fuzz-logs}
mkdir -p "$LOGS"

if ! cargo $TC fuzz --version >/dev/null 2>&1; then
  echo "fuzz: cargo-fuzz is not installed (scripts/setup.sh installs it: cargo install cargo-fuzz --version 0.13.2 --locked)" >&2
  exit 1
fi

t0=$(date +%s)
if [ "${FUZZ_BUILD:-1}" = 0 ]; then
  echo "fuzz: FUZZ_BUILD=0: running the targets already built"
elif ! cargo $TC fuzz build -s "$SAN" -a >"$LOGS/build.log" 2>&1; then
  tail -40 "$LOGS/build.log" >&2
  echo "fuzz: build failed (log: $LOGS/build.log)" >&2
  exit 1
fi
t1=$(date +%s)
echo "fuzz: built the targets in $((t1 - t0)) s"
bash fuzz/make_seeds.sh >/dev/null

TRIPLE=$(rustc $TC -vV | sed -n 's/^host: //p')
BIN_DIR=fuzz/target/$TRIPLE/release

max_len() {
  case "$1" in
    pickle) echo 65536 ;;
    config_model | manifest) echo 16384 ;;
    *) echo 1048576 ;;
  esac
}
dict() {
  case "$1" in
    pickle | torch_zip) echo fuzz/dicts/torch.dict ;;
    config_model) echo fuzz/dicts/config.dict ;;
    manifest) echo fuzz/dicts/manifest.dict ;;
    safetensors) echo fuzz/dicts/safetensors.dict ;;
    *) echo "" ;;
  esac
}

fail=0
summary=()
for t in "${TARGETS[@]}"; do
  mkdir -p "fuzz/artifacts/$t"
  d=$(dict "$t")
  log="$LOGS/$t.log"
  set +e
  # shellcheck disable=SC2086
  "$BIN_DIR/$t" "fuzz/corpus/$t" \
    -max_total_time="$SECS" -max_len="$(max_len "$t")" ${d:+-dict=$d} \
    -rss_limit_mb=1536 -malloc_limit_mb=1024 -timeout=10 \
    -artifact_prefix="fuzz/artifacts/$t/" -print_final_stats=1 ${FUZZ_FLAGS:-} >"$log" 2>&1
  rc=$?
  set -e
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  if [ -z "$execs" ]; then execs=$(grep -oE '^#[0-9]+' "$log" | tail -1 | tr -d '#'); fi
  # fork mode (-fork=N) prints "#EXECS: cov: ... oom/timeout/crash: O/T/C ..." and may exit 0
  forkstat=$(grep -oE 'oom/timeout/crash: [0-9]+/[0-9]+/[0-9]+' "$log" | tail -1 | sed 's/.*: //' || true)
  if [ -n "$forkstat" ] && [ "$forkstat" != 0/0/0 ]; then
    fail=1
    result="FINDINGS oom/timeout/crash $forkstat (fork mode; inputs in fuzz/artifacts/$t/)"
  elif [ $rc -eq 0 ]; then
    result=ok
  else
    fail=1
    if grep -q 'blockffn-fuzz: memory cap' "$log"; then result="MEMORY CAP ($(grep -m1 'blockffn-fuzz: memory cap' "$log" | sed 's/.*memory cap: //'))"
    elif grep -q 'libFuzzer: out-of-memory' "$log"; then result="OUT OF MEMORY (rss limit)"
    elif grep -q 'libFuzzer: timeout' "$log"; then result="TIMEOUT"
    elif grep -q 'panicked at' "$log"; then result="PANIC ($(grep -m1 -A1 'panicked at' "$log" | tr '\n' ' ' | cut -c1-200))"
    else result="CRASH (exit $rc)"
    fi
    art=$(grep -oE "fuzz/artifacts/$t/[a-z-]+-[0-9a-f]+" "$log" | tail -1 || true)
    [ -n "$art" ] && result="$result; input: $art"
  fi
  line=$(printf '%-13s %10s execs in %3s s  %s' "$t" "${execs:-?}" "$SECS" "$result")
  echo "fuzz: $line"
  summary+=("$line")
done
echo "fuzz: total $(( $(date +%s) - t0 )) s (build $((t1 - t0)) s); logs in $LOGS/"
if [ $fail -ne 0 ]; then
  echo "fuzz: FAILED; reproduce one input with: fuzz/target/$TRIPLE/release/<target> <input>" >&2
  exit 1
fi
