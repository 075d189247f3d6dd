#!/usr/bin/env bash
# Speculative decoding through the native CLI on a GPU machine (wgpu/Vulkan) and on its CPU, with
# the demo model on the prompt set of bench/speculative.mjs (chat, continuation, rewrite, copy):
# greedy, 96 new tokens, 3 repetitions of dense AR, sparse AR, and prompt lookup + sparse / dense
# (adaptive draft length) and + sparse with 8 drafts. Every output is checked equal to plain greedy.
#   cargo build --release --features cli,gpu         # on the build machine; bring the binary along
#   OUT=results bash bench/h200_spec.sh              # writes OUT/spec.jsonl (one line per run)
set -uo pipefail
OUT=${OUT:-bench-out}
mkdir -p "$OUT"
B=${BLOCKFFN:-target/release/blockffn}
# shellcheck source=bench/gpu_env.sh
. bench/gpu_env.sh
# The prompts of bench/speculative.mjs (its chat prompt in the demo model's ChatML).
python3 - > "$OUT/prompts.json" <<'PY'
import json, re
t = open('models/demo/validation.txt').read()
cut = lambda s: re.sub(r'\s+\S*$', '', s)
para = cut(t[2000:2600])
print(json.dumps({
  'chat': '<|im_start|>user\nTell me about the history of the river and the town beside it.<|im_end|>\n<|im_start|>assistant\n',
  'continuation': cut(t[:800]),
  'rewrite': para + '\n\nThe same paragraph, rewritten in plain words:\n',
  'copy': para + '\n\nQuoted exactly:\n' + para[:120],
}))
PY
: > "$OUT/spec.jsonl"
for backend in gpu cpu; do
  for p in chat continuation rewrite copy; do
    prompt=$(python3 -c "import json,sys; print(json.load(open('$OUT/prompts.json'))['$p'], end='')")
    for cfg in "dense AR|--dense" "sparse AR|" "spec+sparse|--speculative ngram" "spec+dense|--speculative ngram --dense" "spec8+sparse|--speculative ngram --draft-len 8"; do
      name=${cfg%%|*}
      for rep in 1 2 3; do
        # shellcheck disable=SC2086
        "$B" generate --model models/demo --backend $backend --prompt "$prompt" --max-new-tokens 96 --ignore-eos \
          --json --timing ${cfg#*|} |
          python3 -c "import json,sys; d=json.load(sys.stdin); d.update(backend='$backend', prompt='$p', config='$name', rep=$rep); print(json.dumps(d))" \
          >> "$OUT/spec.jsonl"
      done
    done
  done
done
python3 - "$OUT/spec.jsonl" <<'PY'
import json, sys, statistics as st
rows = [json.loads(l) for l in open(sys.argv[1])]
for b in ['gpu', 'cpu']:
    for p in ['chat', 'continuation', 'rewrite', 'copy']:
        rs = [r for r in rows if r['backend'] == b and r['prompt'] == p]
        plain = next(r['ids'] for r in rs if r['config'] == 'sparse AR')
        assert all(r['ids'] == plain for r in rs), f'{b} {p}: outputs differ'
        med = {c: st.median(r['timing']['decode_tokens_per_second'] for r in rs if r['config'] == c) for c in dict.fromkeys(r['config'] for r in rs)}
        print(b, p, {c: round(v, 1) for c, v in med.items()})
PY
