#!/usr/bin/env bash
# Builds the npm package's wasm into pkg/ (wasm-pack, --target web, SIMD128 from .cargo/config.toml),
# then optimises it with wasm-opt from npm binaryen (never Debian's: its version corrupts
# wasm-bindgen output). The hand-written JS layer is js/; `npm pack` then makes the tarball.
#   scripts/build-wasm.sh          release build + wasm-opt -O3
#   scripts/build-wasm.sh --dev    debug build, no wasm-opt (faster, for iterating)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--dev" ]; then
  wasm-pack build --target web --dev --mode no-install --out-dir pkg --no-pack
else
  wasm-pack build --target web --release --mode no-install --out-dir pkg --no-pack
  if [ -x node_modules/.bin/wasm-opt ]; then
    node_modules/.bin/wasm-opt -O3 --enable-simd --enable-bulk-memory --enable-nontrapping-float-to-int \
      --enable-reference-types --enable-multivalue --enable-sign-ext pkg/blockffn_bg.wasm -o pkg/blockffn_bg.wasm
  else
    echo "warning: node_modules/.bin/wasm-opt missing (npm install); pkg/blockffn_bg.wasm is not optimised" >&2
  fi
fi
echo "pkg/blockffn_bg.wasm: $(stat -c %s pkg/blockffn_bg.wasm) bytes ($(gzip -9c pkg/blockffn_bg.wasm | wc -c) gzipped)"
