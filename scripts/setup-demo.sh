#!/usr/bin/env bash
# Installs what the demo page needs and a fresh machine lacks (it starts with Rust, Node, Python):
# the wasm32 target and wasm-bindgen-cli at the crate's pinned version. Idempotent: each step checks
# first. scripts/setup.sh (the tests) runs this, then installs the rest.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

rustup target list --installed | grep -q '^wasm32-unknown-unknown$' || { log "rustup: wasm32 target"; rustup target add wasm32-unknown-unknown; }
WBG_VER=$(sed -n 's/^wasm-bindgen = "=\([0-9.]*\)".*/\1/p' Cargo.toml)
if ! wasm-bindgen --version 2>/dev/null | grep -q " ${WBG_VER}\$"; then
  log "cargo install wasm-bindgen-cli ${WBG_VER} (a few minutes)"
  # no --locked: the locked tree names a crate version this registry mirror lacks
  cargo install -q wasm-bindgen-cli --version "${WBG_VER}"
fi
