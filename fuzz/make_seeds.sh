#!/usr/bin/env bash
# Builds fuzz/corpus/<target>/ (gitignored) from the committed hand-made seeds (fuzz/seeds/) and the
# repository's fixtures: pytorch_model.bin files and their data.pkl, converted runtime packages
# (model.safetensors / manifest.json / config.json in f32, f16 and q8), config.json files,
# tokenizer.json files. Idempotent; re-run after the fixtures change.
#
# Converting needs the CLI: $BLOCKFFN_BIN, else target/release/blockffn, else target/debug/blockffn.
# With none of them the converted seeds are skipped (the committed runtime fixture still seeds the
# weights target) and a note says so.
set -euo pipefail
cd "$(dirname "$0")/.."
C=${FUZZ_CORPUS:-fuzz/corpus}   # where to write (default: the corpus scripts/fuzz.sh runs on)
TARGETS=(pickle torch_zip safetensors config_model manifest tokenizer)
for t in "${TARGETS[@]}"; do
  mkdir -p "$C/$t"
  if [ -d "fuzz/seeds/$t" ]; then cp -f fuzz/seeds/"$t"/* "$C/$t/"; fi
done
F=tests/fixtures

# Checkpoints (zip target) and their pickles (pickle target).
for bin in "$F"/*/hf/pytorch_model.bin "$F"/torch/*.bin; do
  case "$bin" in
    "$F"/torch/*) name="torch_$(basename "$bin" .bin)";;
    *) name=$(basename "$(dirname "$(dirname "$bin")")");;
  esac
  cp -f "$bin" "$C/torch_zip/$name.bin"
  python3 - "$bin" "$C/pickle/$name.pkl" <<'PY'
import sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
pkl = [n for n in z.namelist() if n.endswith("/data.pkl")][0]
open(sys.argv[2], "wb").write(z.read(pkl))
PY
done

# Configs and tokenizers of the fixtures and the demo model.
for cfg in "$F"/*/hf/config.json; do cp -f "$cfg" "$C/config_model/$(basename "$(dirname "$(dirname "$cfg")")").json"; done
cp -f models/demo/config.json "$C/config_model/demo.json"
cp -f "$F/mla_block_linear/hf/tokenizer.json" "$C/tokenizer/fixture_bpe.json"
cp -f "$F/tokenizer/tokenizer.json" "$C/tokenizer/tokenizer_fixture.json"
cp -f models/demo/tokenizer.json "$C/tokenizer/demo.json"
cp -f models/demo/manifest.json "$C/manifest/demo.json"

# The committed runtime package.
R="$F/mla_block_linear/runtime"
cp -f "$R/model.safetensors" "$C/safetensors/mla_block_linear_runtime.safetensors"
cp -f "$R/manifest.json" "$C/manifest/mla_block_linear_runtime.json"

# Converted packages: every fixture in f32, three of them also in f16 and q8.
BIN=${BLOCKFFN_BIN:-}
[ -z "$BIN" ] && [ -x target/release/blockffn ] && BIN=target/release/blockffn
[ -z "$BIN" ] && [ -x target/debug/blockffn ] && BIN=target/debug/blockffn
if [ -z "$BIN" ]; then
  echo "make_seeds: no blockffn CLI (cargo build --features cli); converted seeds skipped" >&2
else
  TMP=$(mktemp -d)
  trap 'rm -rf "$TMP"' EXIT
  for dir in "$F"/*/hf; do
    name=$(basename "$(dirname "$dir")")
    dtypes="f32"
    case "$name" in mla_block_linear|gqa_tied_block_linear|gqa_dense) dtypes="f32 f16 q8";; esac
    for d in $dtypes; do
      out="$TMP/$name-$d"
      "$BIN" convert "$dir" "$out" --dtype "$d" >/dev/null 2>&1 || { echo "make_seeds: convert $name --dtype $d failed" >&2; continue; }
      cp -f "$out/model.safetensors" "$C/safetensors/$name-$d.safetensors"
      cp -f "$out/manifest.json" "$C/manifest/$name-$d.json"
      [ "$d" = f32 ] && cp -f "$out/config.json" "$C/config_model/$name-converted.json"
    done
  done
fi
for t in "${TARGETS[@]}"; do printf 'make_seeds: %-13s %3d files, %s\n' "$t" "$(ls "$C/$t" | wc -l)" "$(du -sh "$C/$t" | cut -f1)"; done
