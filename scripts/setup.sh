#!/usr/bin/env bash
# Installs everything a fresh machine lacks to build and test blockffn (the demo alone needs only
# scripts/setup-demo.sh, which this runs). Idempotent: each step
# checks first and skips what is already there. Needs only Rust, Node and Python to start with.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"

# 1) System packages: headless Chromium + driver (browser tests), Mesa Vulkan (native wgpu).
#    Never Debian's binaryen: its wasm-opt 108 corrupts wasm-bindgen output.
need_apt=()
command -v chromium >/dev/null || need_apt+=(chromium)
command -v chromedriver >/dev/null || need_apt+=(chromium-driver)
dpkg -s mesa-vulkan-drivers >/dev/null 2>&1 || need_apt+=(mesa-vulkan-drivers libvulkan1)
if [ ${#need_apt[@]} -gt 0 ]; then
  log "apt: ${need_apt[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

# 2) Rust: what the demo needs (wasm32 target, wasm-bindgen-cli at the pinned version), then
#    cargo-fuzz for the fuzz targets.
bash scripts/setup-demo.sh
# cargo-fuzz for the fuzz targets (scripts/fuzz.sh); works on the stable toolchain with -s none.
if ! cargo fuzz --version 2>/dev/null | grep -q "0.13.2"; then
  log "cargo install cargo-fuzz 0.13.2 (a minute or two)"
  cargo install -q cargo-fuzz --version 0.13.2 --locked
fi

# 3) Python: the PyTorch reference model and its tests.
if ! python3 -c "import torch, tokenizers, safetensors, numpy, pytest" 2>/dev/null; then
  log "pip: train/requirements.txt (torch is large: a few minutes)"
  python3 -m pip install -q -r train/requirements.txt
fi
# Optional: the ONNX exporter and onnxruntime for the benchmark's whole-model peer
# (bench/export_onnx.py). A failure here does not stop setup: the benchmark skips that section.
if ! python3 -c "import onnx, onnxscript, onnxruntime" 2>/dev/null; then
  log "pip: bench/requirements.txt (optional)"
  python3 -m pip install -q -r bench/requirements.txt || log "pip: bench/requirements.txt failed; bench/run.mjs will skip the ONNX whole-model peer"
fi

# 4) npm dev dependencies (Playwright driving the system Chromium, wasm-opt from npm binaryen,
#    TypeScript for the declaration check). Cheap when already up to date.
if [ -f package.json ]; then
  log "npm install"
  npm install --no-audit --no-fund --silent
fi
log "ready: $(rustc --version), $(wasm-bindgen --version), $(node --version), chromium $(chromium --version 2>/dev/null | awk '{print $2}')"
