#!/usr/bin/env bash
# The GPU benchmark on a CUDA machine with an NVIDIA Vulkan driver (BENCHMARKS.md, "GPU path").
# Run from the repo root with a release CLI built with the GPU backend:
#
#   cargo build --release --features cli,gpu          # on the build machine; bring the binary along
#   OUT=results bash bench/h200.sh                    # on the GPU machine (PyTorch + CUDA there)
#
# If the machine lacks the Vulkan loader / glvnd, put their .deb files in .gl/ (see BENCHMARKS.md):
# they are unpacked first. Writes OUT/gpu.jsonl (our runs), OUT/torch.jsonl (the PyTorch
# reference; TORCH=0 skips it, SHAPES=xlarge runs one shape), OUT/check.txt (GPU = CPU checks on this GPU) and OUT/log.txt.
set -uo pipefail
OUT=${OUT:-bench-out}
mkdir -p "$OUT"
B=${BLOCKFFN:-target/release/blockffn}
# shellcheck source=bench/gpu_env.sh
. bench/gpu_env.sh
WORK=${WORK:-/tmp/blockffn-bench}
log=$OUT/log.txt
exec 2> >(tee -a "$log" >&2)
nvidia-smi --query-gpu=name,memory.total,clocks.max.memory --format=csv | tee "$OUT/gpu.txt"

bench() { echo "## bench $*" >&2; "$B" bench "$@" | tee -a "$OUT/gpu.jsonl"; }

# 1. Exactness on this GPU: logits and greedy text, GPU vs CPU.
{
  for b in cpu gpu; do
    "$B" generate --model models/demo --prompt "Once upon a time" --max-new-tokens 64 --json --backend $b
  done | uniq -c | awk '{print "demo greedy 64 tokens, cpu/gpu lines identical:", ($1 == 2 ? "yes" : "NO")}'
} | tee "$OUT/check.txt"

# 2. The demo model, then random Small- and XLarge-shaped f16 models at ~20% active experts
#    (generated here on the GPU; PyTorch calibrates the routers).
for m in "" --dense; do bench --model models/demo --backend gpu $m --prompt-len 128 --decode 128 --reps 5; done
BLOCKFFN_GPU_PROFILE=1 bench --model models/demo --backend gpu --prompt-len 128 --decode 16 --reps 1
for shape in ${SHAPES:-small xlarge}; do
  python3 bench/make_small_random.py --shape $shape --activation 0.2 --device cuda:0 --dtypes f16 \
    --cli "$B" --no-check --out "$WORK" | tail -1 >> "$OUT/models.jsonl"
  for m in "" --dense; do
    bench --model "$WORK/$shape-a20-f16" --backend gpu $m --prompt-len 128 --decode 128 --reps 5
  done
  BLOCKFFN_GPU_PROFILE=1 bench --model "$WORK/$shape-a20-f16" --backend gpu --prompt-len 128 --decode 16 --reps 1
  # The PyTorch reference at the same shape and context, same GPU: eager (the paper's HF row) and
  # the strongest variant (sdpa + CUDA graph).
  [ "${TORCH:-1}" = 1 ] || continue
  python3 bench/torch_decode.py --device cuda:0 --shape $shape --dtype bf16 --attn eager --context 192 | tail -1 | tee -a "$OUT/torch.jsonl"
  python3 bench/torch_decode.py --device cuda:0 --shape $shape --dtype bf16 --attn sdpa --graph --context 192 | tail -1 | tee -a "$OUT/torch.jsonl"
done
