#!/usr/bin/env bash
# Builds the wasm package into pkg/ (wasm-pack, --target web, SIMD128), then optimises it with
# wasm-opt from npm binaryen (never Debian's: its version corrupts wasm-bindgen output).
set -euo pipefail
cd "$(dirname "$0")/.."
wasm-pack build --target web --release --mode no-install --out-dir pkg --no-pack
if [ -x node_modules/.bin/wasm-opt ]; then
  node_modules/.bin/wasm-opt -O3 --enable-simd --enable-bulk-memory --enable-nontrapping-float-to-int \
    --enable-reference-types --enable-multivalue --enable-sign-ext pkg/blockffn_bg.wasm -o pkg/blockffn_bg.wasm
fi
ls -l pkg/blockffn_bg.wasm
