#!/usr/bin/env bash
# Sets up a fresh machine and runs the demo with the embedded default model (models/demo): the
# native CLI generating from a prompt and measuring sparsity on a slice of the held-out text.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release --features cli
BIN=target/release/blockffn
MODEL=models/demo
PROMPT=${1:-"The history of the"}
echo "model: $MODEL"
echo "prompt: $PROMPT"
$BIN generate --model "$MODEL" --prompt "$PROMPT" --max-new-tokens 48 --temperature 0.8 --top-p 0.9 --seed 1
echo
$BIN eval --model "$MODEL" --text tests/fixtures/demo/eval.txt
