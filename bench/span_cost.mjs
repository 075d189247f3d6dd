// What a speculative verification costs: the demo model in wasm (Node, one thread, the benchmark
// build), a span of k tokens after a 64-token context run in one forward with the KV cache and
// every position's logits (benchSpans: sparse = the chunk kernels over the span's union), for
// k = 1, 2, 4, 8, 16. A verification of k drafts pays off only when k + 1 tokens cost less than the
// tokens it yields; cost(k) / (k · cost(1)) is the bound: 1 means each token costs what a plain
// step costs, so no drafter can gain. Medians of repeated runs, every k in the same run.
//   node bench/span_cost.mjs [--out bench/results/span-cost-<date>.json]
// Needs scripts/build-wasm.sh --bench (target/bench-pkg) and the CLI for the f32 and q8 copies.

import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { demoAs, fmt, median } from './util.mjs';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const args = process.argv.slice(2);
const outIdx = args.indexOf('--out');
const out = outIdx >= 0 ? args[outIdx + 1] : join(ROOT, `bench/results/span-cost-${new Date().toISOString().slice(0, 10)}.json`);
const log = (...a) => console.error(...a);

const BENCH_PKG = join(ROOT, 'target/bench-pkg');
if (!existsSync(join(BENCH_PKG, 'pkg/blockffn.js'))) {
  console.error('the benchmark build is missing: run scripts/build-wasm.sh --bench first');
  process.exit(2);
}
const wasm = await import(join(BENCH_PKG, 'pkg/blockffn.js'));
await wasm.default({ module_or_path: readFileSync(join(BENCH_PKG, 'pkg/blockffn_bg.wasm')) });
const { createEngine } = await import(join(BENCH_PKG, 'js/index.js'));

const KS = [1, 2, 4, 8, 16];
const CTX = 64;
const TOKENS = 96; // per run: 96 / k spans
const REPS = 5;

const engine = await createEngine({ worker: false });
const text = readFileSync(join(ROOT, 'models/demo/validation.txt'), 'utf8');
const rows = [];
for (const dtype of ['f16', 'f32', 'q8']) {
  const dir = dtype === 'f16' ? join(ROOT, 'models/demo') : demoAs(ROOT, dtype, log);
  if (!dir) continue;
  await engine.load(dir, { cache: false, draftHead: false });
  const inner = engine._model.engine;
  const ids = Uint32Array.from(inner.tokenize(text.slice(0, 4000)).slice(0, CTX + TOKENS));
  for (const mode of ['sparse', 'dense']) {
    const ms = Object.fromEntries(KS.map((k) => [k, []]));
    wasm.benchSpans(inner, ids, CTX, 1, mode === 'dense'); // warm-up
    for (let r = 0; r < REPS; r++) {
      for (const k of KS) ms[k].push(wasm.benchSpans(inner, ids, CTX, k, mode === 'dense').msPerToken * k);
    }
    const perSpan = Object.fromEntries(KS.map((k) => [k, median(ms[k])]));
    const row = { dtype, mode, msPerSpan: perSpan, relative: Object.fromEntries(KS.map((k) => [k, perSpan[k] / (k * perSpan[1])])) };
    rows.push(row);
    log(`${dtype} ${mode}: ${KS.map((k) => `k=${k} ${fmt(perSpan[k], 3)} ms`).join(', ')}`);
  }
}
await engine.unload();

const machine = { cpu: cpus()[0]?.model, logicalCores: cpus().length, node: process.version, context: CTX, tokens: TOKENS, reps: REPS };
mkdirSync(join(ROOT, 'bench/results'), { recursive: true });
writeFileSync(out, JSON.stringify({ machine, rows }, null, 1));
console.log(`Machine: ${machine.cpu}, Node ${machine.node}, one thread; spans after ${CTX} tokens, every position's logits, median of ${REPS}.\n`);
console.log(`| dtype | FFN | ${KS.map((k) => `k=${k} ms`).join(' | ')} | ${KS.slice(1).map((k) => `cost(${k}) ÷ ${k}·cost(1)`).join(' | ')} |`);
console.log(`|---|---|${KS.map(() => '---').join('|')}|${KS.slice(1).map(() => '---').join('|')}|`);
for (const r of rows) {
  console.log(`| ${r.dtype} | ${r.mode} | ${KS.map((k) => fmt(r.msPerSpan[k], 3)).join(' | ')} | ${KS.slice(1).map((k) => fmt(r.relative[k])).join(' | ')} |`);
}
console.log(`\nResults: ${out}`);
