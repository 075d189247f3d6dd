#!/usr/bin/env bash
# Builds the npm package's wasm into pkg/ (wasm-pack, --target web), then optimises it with wasm-opt
# from npm binaryen (never Debian's: its version corrupts wasm-bindgen output). Two builds of the same
# crate ship side by side, chosen at load time by js/wasm.js (feature detection):
#   pkg/blockffn_bg.wasm          SIMD128 (.cargo/config.toml): every browser with WebAssembly SIMD
#   pkg/blockffn_relaxed_bg.wasm  SIMD128 + relaxed SIMD (fused multiply-add in the kernels)
# Both share one JS glue (pkg/blockffn.js); the script checks that the two glues are identical.
# The hand-written JS layer is js/; `npm pack` then makes the tarball.
#   scripts/build-wasm.sh          release builds + wasm-opt -O3
#   scripts/build-wasm.sh --dev    debug build of the baseline only, no wasm-opt (faster, for iterating)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--dev" ]; then
  wasm-pack build --target web --dev --mode no-install --out-dir pkg --no-pack
  rm -f pkg/blockffn_relaxed_bg.wasm
else
  wasm-pack build --target web --release --mode no-install --out-dir pkg --no-pack
  # RUSTFLAGS replaces .cargo/config.toml's flags, so +simd128 is repeated; a separate target dir
  # keeps both builds incremental.
  RUSTFLAGS="-C target-feature=+simd128,+relaxed-simd" CARGO_TARGET_DIR=target/relaxed \
    wasm-pack build --target web --release --mode no-install --out-dir target/pkg-relaxed --no-pack
  if ! cmp -s pkg/blockffn.js target/pkg-relaxed/blockffn.js; then
    echo "error: the relaxed-SIMD build's JS glue differs from the baseline's; they cannot share pkg/blockffn.js" >&2
    exit 1
  fi
  cp target/pkg-relaxed/blockffn_bg.wasm pkg/blockffn_relaxed_bg.wasm
  if [ -x node_modules/.bin/wasm-opt ]; then
    for f in blockffn_bg blockffn_relaxed_bg; do
      node_modules/.bin/wasm-opt -O3 --enable-simd --enable-relaxed-simd --enable-bulk-memory \
        --enable-nontrapping-float-to-int --enable-reference-types --enable-multivalue --enable-sign-ext \
        "pkg/$f.wasm" -o "pkg/$f.wasm"
    done
  else
    echo "warning: node_modules/.bin/wasm-opt missing (npm install); the wasm files are not optimised" >&2
  fi
fi
for f in pkg/blockffn_bg.wasm pkg/blockffn_relaxed_bg.wasm; do
  [ -f "$f" ] && echo "$f: $(stat -c %s "$f") bytes ($(gzip -9c "$f" | wc -c) gzipped)"
done
