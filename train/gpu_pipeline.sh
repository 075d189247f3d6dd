#!/usr/bin/env bash
# The GPU part of the demo-model recipe, as one device command: train several runs side by side
# (round-robin over the GPUs, several per GPU when there are more runs than GPUs), then export each
# in the released HF layout, convert it with our Rust CLI and measure it with `blockffn eval` on the
# held-out text as soon as it finishes. Results go to $OUT: results.json, logs.tar.gz and the HF
# export of the best BlockFFN run split into <16 MiB parts (best = meets TLS >= 0.80 and
# CLS_8 >= 0.70 with the lowest perplexity; otherwise the highest CLS_8).
#
#   usage: train/gpu_pipeline.sh BIN VALIDATION_TXT SPEC...
#   SPEC:  name:config[:key=value...]   config names train/configs/demo_<config>.json and each
#          key=value is passed as `--set key=value`, e.g. cs02:blockffn:lambda_cs=0.2:lambda_al=0.004
#          (default SPECs: blockffn:blockffn null:null topk:topk dense:dense)
#   needs: train/out/data (pretokenize.py), train/out/tokenizer/tokenizer.json, a blockffn binary
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONUNBUFFERED=1
BIN=$1; VAL=$2; shift 2
SPECS=${*:-blockffn:blockffn null:null topk:topk dense:dense}
OUT=${OUT:-/tmp/out}; WORK=/tmp/runs; mkdir -p "$OUT" "$WORK"
EXTRA=${TRAIN_ARGS:-}
python3 -c 'import torch; print("torch", torch.__version__, "gpus", torch.cuda.device_count())'
t0=$(date +%s)
NGPU=$(python3 -c 'import torch; print(max(1, torch.cuda.device_count()))')

run_one() {  # name config gpu sets...
  local name=$1 config=$2 gpu=$3; shift 3
  local sets=(); for kv in "$@"; do sets+=(--set "$kv"); done
  local t=$(date +%s) cfg="train/configs/demo_$config.json"
  [ -f "$cfg" ] || cfg="train/configs/$config.json"
  CUDA_VISIBLE_DEVICES=$gpu python3 train/train.py --config "$cfg" --data train/out/data \
    --out "$WORK/$name" --tokenizer train/out/tokenizer/tokenizer.json "${sets[@]}" $EXTRA > "$WORK/$name.stdout" 2>&1
  echo "$name trained in $(( $(date +%s) - t )) s (gpu $gpu)"
  if [ -f "$WORK/$name/hf/pytorch_model.bin" ]; then
    "$BIN" convert "$WORK/$name/hf" "$WORK/$name/rt" --dtype f32 > "$WORK/$name.convert" 2>&1 && \
    "$BIN" eval --model "$WORK/$name/rt" --text "$VAL" --json > "$WORK/$name.eval" 2> "$WORK/$name.evalerr" || \
      echo '{"error": "convert or eval failed"}' > "$WORK/$name.eval"
  else
    echo '{"error": "no export"}' > "$WORK/$name.eval"
  fi
  echo "$name done at $(( $(date +%s) - t0 )) s: $(head -c 400 "$WORK/$name.eval")"
}

i=0; NAMES=()
for spec in $SPECS; do
  IFS=: read -r -a parts <<< "$spec"
  NAMES+=("${parts[0]}")
  echo "${parts[*]:1}" > "$WORK/${parts[0]}.spec"
  run_one "${parts[0]}" "${parts[1]}" $(( i % NGPU )) "${parts[@]:2}" &
  i=$(( i + 1 ))
done
wait

python3 - "$WORK" "$OUT" "${NAMES[@]}" <<'EOF'
import json, os, sys
work, out, names = sys.argv[1], sys.argv[2], sys.argv[3:]
res = {}
for n in names:
    try:
        r = json.load(open(os.path.join(work, n + ".eval")))
    except Exception as e:
        r = {"error": f"unreadable eval: {e}"}
    r["spec"] = open(os.path.join(work, n + ".spec")).read().split()
    res[n] = r
json.dump(res, open(os.path.join(out, "results.json"), "w"), indent=1)
def get(r, k):  # eval --json: {"ppl", "tokens", "tls", "cls": {"1": ..., "8": ...}, "reuse"}
    return r.get("tls") if k == "tls" else (r.get("cls") or {}).get(k.replace("cls_", ""))
block = [n for n in names if res[n]["spec"][0] == "blockffn" and "error" not in res[n]]
ok = [n for n in block if (get(res[n], "tls") or 0) >= 0.80 and (get(res[n], "cls_8") or 0) >= 0.70]
best = min(ok, key=lambda n: res[n].get("ppl", 1e9)) if ok else (max(block, key=lambda n: get(res[n], "cls_8") or 0) if block else "")
open(os.path.join(work, "best"), "w").write(best)
print("best BlockFFN run:", best or "(none)")
EOF
BEST=$(cat "$WORK/best")
tar -czf "$OUT/logs.tar.gz" -C "$WORK" $(cd "$WORK" && ls -d */log.jsonl *.stdout *.eval *.convert 2>/dev/null)
if [ -n "$BEST" ] && [ -f "$WORK/$BEST/hf/pytorch_model.bin" ]; then
  echo "$BEST" > "$OUT/best.txt"
  cp "$WORK/$BEST/hf/config.json" "$OUT/config.json"
  split -b 15m -d "$WORK/$BEST/hf/pytorch_model.bin" "$OUT/pytorch_model.bin.part"
fi
echo "pipeline took $(( $(date +%s) - t0 )) s"; ls -la "$OUT"
