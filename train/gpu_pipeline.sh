#!/usr/bin/env bash
# The GPU part of the demo-model recipe, as one device command: train the four runs of the ablation
# side by side on one GPU (BlockFFN, Null, TopK, Dense), export each in the released HF layout,
# convert with our Rust CLI and measure it with `blockffn eval` on the held-out text. Results go
# to $OUT (results.json, logs.tar.gz, the BlockFFN export split into <16 MiB parts).
#
#   usage: train/gpu_pipeline.sh BIN VALIDATION_TXT [RUNS...]   (RUNS default: blockffn null topk dense)
#   needs: train/out/data (pretokenize.py), train/out/tokenizer/tokenizer.json, a blockffn binary
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
BIN=$1; VAL=$2; shift 2
RUNS=${*:-blockffn null topk dense}
OUT=${OUT:-/tmp/out}; WORK=/tmp/runs; mkdir -p "$OUT" "$WORK"
EXTRA=${TRAIN_ARGS:-}
python3 -c 'import torch; print("torch", torch.__version__, "gpus", torch.cuda.device_count())'
t0=$(date +%s)
NGPU=$(python3 -c 'import torch; print(max(1, torch.cuda.device_count()))')
i=0
for r in $RUNS; do
  CUDA_VISIBLE_DEVICES=$(( i % NGPU )) python3 train/train.py --config "train/configs/demo_$r.json" --data train/out/data --out "$WORK/$r" \
    --tokenizer train/out/tokenizer/tokenizer.json $EXTRA > "$WORK/$r.stdout" 2>&1 &
  i=$(( i + 1 ))
done
wait
echo "training took $(( $(date +%s) - t0 )) s"
for r in $RUNS; do tail -n 3 "$WORK/$r.stdout"; done
for r in $RUNS; do
  ( if [ -f "$WORK/$r/hf/pytorch_model.bin" ]; then
      "$BIN" convert "$WORK/$r/hf" "$WORK/$r/rt" --dtype f32 && \
      "$BIN" eval --model "$WORK/$r/rt" --text "$VAL" --json > "$WORK/$r.eval" || echo '{"error": "eval failed"}' > "$WORK/$r.eval"
    else
      echo '{"error": "no export"}' > "$WORK/$r.eval"
    fi ) &
done
wait
echo '{' > "$OUT/results.json"; first=1
for r in $RUNS; do
  [ $first = 1 ] || echo ',' >> "$OUT/results.json"; first=0
  printf '"%s": %s' "$r" "$(cat "$WORK/$r.eval")" >> "$OUT/results.json"
  echo "$r: $(cat "$WORK/$r.eval")"
done
echo '}' >> "$OUT/results.json"
tar -czf "$OUT/logs.tar.gz" -C "$WORK" $(cd "$WORK" && ls -d */log.jsonl *.stdout 2>/dev/null)
if [ -f "$WORK/blockffn/hf/pytorch_model.bin" ]; then
  cp "$WORK/blockffn/hf/config.json" "$OUT/config.json"
  split -b 15m -d "$WORK/blockffn/hf/pytorch_model.bin" "$OUT/pytorch_model.bin.part"
fi
echo "pipeline took $(( $(date +%s) - t0 )) s"; ls -la "$OUT"
