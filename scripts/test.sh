#!/usr/bin/env bash
# Installs what the tests need (scripts/setup.sh), then runs every test: native Rust (unit +
# integration over the golden fixtures), the engine compiled to wasm32 under Node
# (wasm-bindgen-test), the Python reference's tests, and the npm package (Node tests against the
# packed tarball, headless Chromium for the worker transport).
set -euo pipefail
cd "$(dirname "$0")/.."
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp}

# What the tests need beyond the demo (Chromium, Mesa Vulkan, cargo-fuzz, PyTorch, npm dev dependencies):
# idempotent, seconds when everything is there.
bash scripts/setup.sh

echo "== native Rust tests"
cargo test --features cli

echo "== GPU kernels (wgpu, Vulkan: Mesa lavapipe here) against their scalar twins; the GPU model against the CPU engine"
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp}
BLOCKFFN_REQUIRE_GPU=1 cargo test --features gpu,cli --test gpu_kernels --test gpu_model

echo "== wasm32 tests under Node"
cargo test --target wasm32-unknown-unknown --test wasm_node --test wasm_kernels

echo "== the same under the relaxed-SIMD build (fused multiply-add; what Chromium runs)"
# Node 20 needs the V8 flag; later Node versions have relaxed SIMD on and may not know the flag.
RELAXED_NODE_ARGS=""
if node --experimental-wasm-relaxed-simd -e 0 2>/dev/null; then RELAXED_NODE_ARGS=--experimental-wasm-relaxed-simd; fi
RUSTFLAGS="-C target-feature=+simd128,+relaxed-simd" CARGO_TARGET_DIR=target/relaxed NODE_ARGS="$RELAXED_NODE_ARGS" \
  cargo test --target wasm32-unknown-unknown --test wasm_node --test wasm_kernels

echo "== fuzz targets (short budget)"
bash scripts/fuzz.sh 15   # cargo-fuzz, 6 targets x 15 s; fails on any crash, memory cap or timeout

echo "== Python: reference model, training objectives, corpus, trained export through the Rust CLI"
BLOCKFFN_BIN="$PWD/target/debug/blockffn" python3 -m pytest train/tests -q

echo "== npm package: build, pack, Node tests against the installed tarball, headless Chromium (worker transport)"
bash scripts/build-wasm.sh
cargo build --release --features cli   # the CLI the JS results are compared with
JS_TMP=$(mktemp -d)
trap 'rm -rf "$JS_TMP"' EXIT
npm pack --silent --pack-destination "$JS_TMP" >/dev/null
TGZ=$(ls "$JS_TMP"/blockffn-*.tgz)
mkdir "$JS_TMP/app"
echo '{"name":"scratch-app","private":true,"type":"module"}' >"$JS_TMP/app/package.json"
(cd "$JS_TMP/app" && npm install --offline --no-audit --no-fund --ignore-scripts --silent "$TGZ")
BLOCKFFN_BIN="$PWD/target/release/blockffn" BLOCKFFN_TARBALL="$TGZ" \
  BLOCKFFN_PKG="$JS_TMP/app/node_modules/blockffn/js/index.js" BLOCKFFN_PKG_DIR="$JS_TMP/app/node_modules/blockffn" \
  node --test tests/js/ tests/browser/
