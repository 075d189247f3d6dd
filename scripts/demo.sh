#!/usr/bin/env bash
# The demo. On a fresh machine: installs what is missing (scripts/setup-demo.sh), builds what is
# missing or stale (the wasm package in pkg/; the native CLI only for --cli), and serves the demo page (www/) with the
# embedded default model (models/demo) from 127.0.0.1 with COOP/COEP headers (scripts/serve.py).
#
#   scripts/demo.sh                 serve the page at http://127.0.0.1:8080/www/ (Ctrl+C stops)
#   scripts/demo.sh --port 9000     another port (or PORT=9000 scripts/demo.sh)
#   scripts/demo.sh --cli [PROMPT]  the command-line demo: generate from a prompt, then measure
#                                   sparsity on held-out text
set -euo pipefail
cd "$(dirname "$0")/.."

PORT=${PORT:-8080}
CLI=0
PROMPT="The history of the"
while [ $# -gt 0 ]; do
  case "$1" in
    --cli)
      CLI=1; shift
      if [ $# -gt 0 ]; then PROMPT=$1; shift; fi ;;
    --port) PORT=$2; shift 2 ;;
    --port=*) PORT=${1#--port=}; shift ;;
    -h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $1 (see scripts/demo.sh --help)" >&2; exit 2 ;;
  esac
done

bash scripts/setup-demo.sh   # the wasm32 target and wasm-bindgen; nothing the page does not use
MODEL=models/demo

if [ "$CLI" = 1 ]; then
  cargo build --release --features cli   # a no-op when up to date
  BIN=target/release/blockffn
  echo "model: $MODEL"
  echo "prompt: $PROMPT"
  $BIN generate --model "$MODEL" --prompt "$PROMPT" --max-new-tokens 48 --temperature 0.8 --top-p 0.9 --seed 1
  echo
  $BIN eval --model "$MODEL" --text tests/fixtures/demo/eval.txt
  exit 0
fi

# pkg/ (the wasm the page runs): rebuilt when missing or older than any Rust source or build setting.
WASM=pkg/blockffn_bg.wasm
if [ ! -f "$WASM" ] || [ ! -f pkg/blockffn.js ] || [ ! -f pkg/blockffn_relaxed_bg.wasm ] ||
  [ -n "$(find src Cargo.toml Cargo.lock .cargo -newer "$WASM" -type f -print -quit 2>/dev/null)" ]; then
  echo "[demo] building the wasm package (pkg/, release: a few minutes)"
  bash scripts/build-wasm.sh
else
  echo "[demo] pkg/ is up to date"
fi

if ! python3 -c "import socket,sys; s=socket.socket(); s.bind(('127.0.0.1', int(sys.argv[1])))" "$PORT" 2>/dev/null; then
  echo "[demo] port $PORT is in use; pick another: scripts/demo.sh --port 8081" >&2
  exit 1
fi
URL="http://127.0.0.1:$PORT/www/"
cat <<EOF

  blockffn demo page:  $URL

  (the repository root is served: the page imports /js/ and /pkg/ and loads /models/demo/;
   nothing is fetched from elsewhere. Ctrl+C stops the server.)

EOF
exec python3 scripts/serve.py "$PORT" .
