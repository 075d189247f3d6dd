#!/usr/bin/env bash
# Sets up a fresh machine and runs the demo: the native CLI generating from the embedded default
# model (models/demo). Until that model is trained and committed, it runs the tiny random test
# fixture instead, which proves the pipeline (convert → load → generate) but writes gibberish.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release --features cli
BIN=target/release/blockffn
if [ -f models/demo/manifest.json ]; then
  MODEL=models/demo
else
  echo "(models/demo is not in the repository yet: using the random test fixture mla_block_linear)"
  MODEL=tests/fixtures/mla_block_linear/runtime
fi
PROMPT=${1:-"The history of the"}
echo "model: $MODEL"
echo "prompt: $PROMPT"
$BIN generate --model "$MODEL" --prompt "$PROMPT" --max-new-tokens 48 --temperature 0.8 --top-p 0.9 --seed 1
$BIN eval --model "$MODEL" --text "$( [ -f "$MODEL/validation.txt" ] && echo "$MODEL/validation.txt" || echo tests/fixtures/mla_block_linear/eval.txt )"
