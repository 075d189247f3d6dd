#!/usr/bin/env bash
# Runs every test: native Rust (unit + integration over the golden fixtures), the engine compiled to
# wasm32 under Node (wasm-bindgen-test), and the Python reference's tests.
set -euo pipefail
cd "$(dirname "$0")/.."
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp}

echo "== native Rust tests"
cargo test --features cli

echo "== wasm32 tests under Node"
cargo test --target wasm32-unknown-unknown --test wasm_node --test wasm_kernels

echo "== Python: reference model, training objectives, corpus, trained export through the Rust CLI"
BLOCKFFN_BIN="$PWD/target/debug/blockffn" python3 -m pytest train/tests -q
