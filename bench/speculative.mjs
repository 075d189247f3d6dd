// Speculative decoding end to end: the demo model through the npm API in Node (one thread, the
// wasm build in pkg/), on a fixed prompt set — chat, continuation, rewrite of a given paragraph,
// and a copy-heavy one — in f16 (as shipped), f32 and q8: greedy decode tokens/s of dense AR,
// sparse AR and speculative + sparse with each drafter (prompt lookup; the package's EAGLE draft
// head; adaptive draft length), tokens per forward
// (1 + mean accepted drafts), mean union of experts per verification; every speculative output is
// checked equal to the plain one. Medians of repeated runs, every ratio from the same run.
//   node bench/speculative.mjs [--quick] [--out bench/results/speculative-<date>.json]
// Needs scripts/build-wasm.sh (pkg/) and the CLI (cargo build --release --features cli) for f32/q8.

import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { demoAs, fmt, median } from './util.mjs';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const args = process.argv.slice(2);
const quick = args.includes('--quick');
const outIdx = args.indexOf('--out');
const out = outIdx >= 0 ? args[outIdx + 1] : join(ROOT, `bench/results/speculative-${new Date().toISOString().slice(0, 10)}.json`);
const log = (...a) => console.error(...a);

const { createEngine, chatPrompt } = await import(join(ROOT, 'js/index.js'));
const text = readFileSync(join(ROOT, 'models/demo/validation.txt'), 'utf8');
const paragraph = text.slice(2000, 2600).replace(/\s+\S*$/, '');
const PROMPTS = {
  chat: chatPrompt([{ role: 'user', content: 'Tell me about the history of the river and the town beside it.' }]),
  continuation: text.slice(0, 800).replace(/\s+\S*$/, ''),
  rewrite: `${paragraph}\n\nThe same paragraph, rewritten in plain words:\n`,
  copy: `${paragraph}\n\nQuoted exactly:\n${paragraph.slice(0, 120)}`,
};
const MAX_TOKENS = quick ? 32 : 96;
const REPS = quick ? 1 : 3;
const CONFIGS = [
  { name: 'dense AR', mode: 'dense', speculative: false },
  { name: 'sparse AR', mode: 'sparse', speculative: false },
  { name: 'spec ngram + sparse', mode: 'sparse', speculative: 'ngram' },
  { name: 'spec ngram + dense', mode: 'dense', speculative: 'ngram' },
  { name: 'spec eagle + sparse', mode: 'sparse', speculative: 'eagle' },
];

const engine = await createEngine({ backend: 'wasm' });
const variants = [['f16', join(ROOT, 'models/demo')]];
for (const dtype of quick ? [] : ['f32', 'q8']) {
  const dir = demoAs(ROOT, dtype, log);
  if (dir) variants.push([dtype, dir]);
}

async function runOnce(prompt, cfg) {
  const ids = [];
  let last;
  for await (const c of engine.generate(prompt, {
    maxTokens: MAX_TOKENS, temperature: 0, ignoreEos: true, mode: cfg.mode, speculative: cfg.speculative,
  })) {
    ids.push(...c.tokenIds);
    last = c;
  }
  return { ids, stats: last.stats };
}

const rows = [];
for (const [dtype, dir] of variants) {
  const info = await engine.load(dir, { cache: false });
  log(`${dtype}: ${info.backend}`);
  for (const [pname, prompt] of Object.entries(PROMPTS)) {
    for (const cfg of CONFIGS) await runOnce(prompt, cfg); // warm-up (and the adaptive controller's first measurements are per run anyway)
    const samples = Object.fromEntries(CONFIGS.map((c) => [c.name, []]));
    for (let r = 0; r < REPS; r++) for (const cfg of CONFIGS) samples[cfg.name].push(await runOnce(prompt, cfg));
    const plain = samples['sparse AR'][0].ids;
    const res = {};
    for (const cfg of CONFIGS) {
      const s = samples[cfg.name];
      for (const x of s) if (JSON.stringify(x.ids) !== JSON.stringify(plain)) throw new Error(`${dtype} ${pname} ${cfg.name}: output differs from plain greedy`);
      const sp = s[0].stats.speculation;
      res[cfg.name] = {
        tokensPerSecond: median(s.map((x) => x.stats.tokensPerSecond)),
        tokensPerForward: sp ? (sp.verifies + sp.plain + sp.accepted) / (sp.verifies + sp.plain) : 1,
        meanUnion: sp ? sp.meanUnion : null,
        verifies: sp ? sp.verifies : 0,
      };
    }
    const row = { dtype, prompt: pname, promptTokens: samples['sparse AR'][0].stats.promptTokens, ...res };
    rows.push(row);
    log(`  ${pname}: ${CONFIGS.map((c) => `${c.name} ${fmt(res[c.name].tokensPerSecond, 1)}`).join(', ')}`);
  }
}
await engine.unload();

const machine = { cpu: cpus()[0]?.model, logicalCores: cpus().length, node: process.version, maxTokens: MAX_TOKENS, reps: REPS };
mkdirSync(join(ROOT, 'bench/results'), { recursive: true });
writeFileSync(out, JSON.stringify({ machine, rows }, null, 1));

console.log(`Machine: ${machine.cpu}, Node ${machine.node}, one thread; greedy, ${MAX_TOKENS} new tokens, median of ${REPS}.\n`);
console.log('| dtype | prompt | dense AR tok/s | sparse AR tok/s | drafter | spec+sparse tok/s | ÷ dense AR | ÷ sparse AR | tokens/forward | mean union (of 32) |');
console.log('|---|---|---|---|---|---|---|---|---|---|');
for (const r of rows) {
  const d = r['dense AR'].tokensPerSecond;
  const s = r['sparse AR'].tokensPerSecond;
  for (const drafter of ['ngram', 'eagle']) {
    const p = r[`spec ${drafter} + sparse`];
    console.log(
      `| ${r.dtype} | ${r.prompt} | ${fmt(d, 1)} | ${fmt(s, 1)} | ${drafter} | ${fmt(p.tokensPerSecond, 1)} | ${fmt(p.tokensPerSecond / d)}× | ${fmt(p.tokensPerSecond / s)}× | ${fmt(p.tokensPerForward)} | ${fmt(p.meanUnion, 1)} |`,
    );
  }
}
console.log(`\nResults: ${out}`);
