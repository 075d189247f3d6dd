#!/usr/bin/env bash
# Builds the npm package's wasm into pkg/: cargo for wasm32, then wasm-bindgen (--target web) for the
# JS glue. Two builds of the same crate ship side by side, chosen at load time by js/wasm.js
# (feature detection):
#   pkg/blockffn_bg.wasm          SIMD128 (.cargo/config.toml): every browser with WebAssembly SIMD
#   pkg/blockffn_relaxed_bg.wasm  SIMD128 + relaxed SIMD (fused multiply-add in the kernels)
# Both share one JS glue (pkg/blockffn.js); the script checks that the two glues are identical.
# The hand-written JS layer is js/; `npm pack` then makes the tarball.
#   scripts/build-wasm.sh          release builds (what pkg/ ships)
#   scripts/build-wasm.sh --dev    debug build of the baseline only (faster, for iterating)
#   scripts/build-wasm.sh --bench  the benchmark build (feature `bench`: src/bench.rs exported) of both
#                                  variants into target/bench-pkg/{pkg,js}/, which only bench/*.mjs load;
#                                  pkg/ is left as it is
#   WASM_OPT=1 scripts/build-wasm.sh   also run wasm-opt -O3 (npm binaryen; never Debian's, whose
#                                  version corrupts wasm-bindgen output). Off by default: measured,
#                                  it does not pay (BENCHMARKS.md, "wasm-opt").
set -euo pipefail
cd "$(dirname "$0")/.."

MODE=release
case "${1:-}" in
  "") ;;
  --dev) MODE=dev ;;
  --bench) MODE=bench ;;
  *) echo "unknown argument: $1 (scripts/build-wasm.sh [--dev|--bench])" >&2; exit 2 ;;
esac

# One build: $1 = output dir, $2 = cargo target dir, $3 = cargo profile flag, $4.. = extra cargo args.
# RUSTFLAGS (when set by the caller) replaces .cargo/config.toml's flags.
build() {
  local out=$1 tdir=$2 profile=$3
  shift 3
  echo "[wasm] cargo build → $out (${RUSTFLAGS:-+simd128}${*:+ $*})"
  cargo build -q --lib --target wasm32-unknown-unknown $profile --target-dir "$tdir" --features gpu "$@"
  local dir=release
  [ "$profile" = "" ] && dir=debug
  wasm-bindgen --target web --out-dir "$out" --out-name blockffn "$tdir/wasm32-unknown-unknown/$dir/blockffn.wasm"
}

# Two glues are interchangeable when their code is: wasm-bindgen's "Cast intrinsic" comments name
# closure shims by table index, which differs between the two builds (the code calls them by name).
same_glue() {
  cmp -s <(grep -v '// Cast intrinsic for' "$1") <(grep -v '// Cast intrinsic for' "$2")
}

# The relaxed-SIMD variant: +simd128 repeated (RUSTFLAGS replaces the config's flags); a separate
# target dir keeps both builds incremental. Its glue must equal the baseline's.
build_pair() {
  local out=$1 suffix=$2
  shift 2
  build "$out" target "--release" "$@"
  RUSTFLAGS="-C target-feature=+simd128,+relaxed-simd" build "target/pkg-relaxed$suffix" "target/relaxed" "--release" "$@"
  if ! same_glue "$out/blockffn.js" "target/pkg-relaxed$suffix/blockffn.js"; then
    echo "error: the relaxed-SIMD build's JS glue differs from the baseline's; they cannot share $out/blockffn.js" >&2
    exit 1
  fi
  cp "target/pkg-relaxed$suffix/blockffn_bg.wasm" "$out/blockffn_relaxed_bg.wasm"
}

case $MODE in
  dev)
    build pkg target ""
    rm -f pkg/blockffn_relaxed_bg.wasm
    ;;
  release)
    build_pair pkg ""
    if [ "${WASM_OPT:-0}" = 1 ]; then
      if [ ! -x node_modules/.bin/wasm-opt ]; then
        echo "error: WASM_OPT=1 needs node_modules/.bin/wasm-opt (npm install)" >&2
        exit 1
      fi
      for f in blockffn_bg blockffn_relaxed_bg; do
        node_modules/.bin/wasm-opt -O3 --enable-simd --enable-relaxed-simd --enable-bulk-memory \
          --enable-nontrapping-float-to-int --enable-reference-types --enable-multivalue --enable-sign-ext \
          "pkg/$f.wasm" -o "pkg/$f.wasm"
      done
    fi
    ;;
  bench)
    # Separate target dirs: the feature set differs from pkg/'s, and sharing would rebuild both.
    mkdir -p target/bench-pkg
    CARGO_TARGET_DIR_BASE=target/wasm-bench
    build target/bench-pkg/pkg "$CARGO_TARGET_DIR_BASE" --release --features bench
    RUSTFLAGS="-C target-feature=+simd128,+relaxed-simd" \
      build target/pkg-relaxed-bench "$CARGO_TARGET_DIR_BASE-relaxed" --release --features bench
    if ! same_glue target/bench-pkg/pkg/blockffn.js target/pkg-relaxed-bench/blockffn.js; then
      echo "error: the relaxed-SIMD bench build's JS glue differs from the baseline's" >&2
      exit 1
    fi
    cp target/pkg-relaxed-bench/blockffn_bg.wasm target/bench-pkg/pkg/blockffn_relaxed_bg.wasm
    # The package's JS next to the bench wasm, so js/wasm.js's `../pkg/blockffn.js` is the bench glue
    # and the npm API and the bench exports share one instance.
    rm -rf target/bench-pkg/js
    cp -r js target/bench-pkg/js
    for f in target/bench-pkg/pkg/blockffn_bg.wasm target/bench-pkg/pkg/blockffn_relaxed_bg.wasm; do
      echo "$f: $(stat -c %s "$f") bytes"
    done
    exit 0
    ;;
esac
for f in pkg/blockffn_bg.wasm pkg/blockffn_relaxed_bg.wasm; do
  [ -f "$f" ] && echo "$f: $(stat -c %s "$f") bytes ($(gzip -9c "$f" | wc -c) gzipped)"
done
