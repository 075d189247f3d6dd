// The relaxed-SIMD build against the baseline SIMD128 build in one process (a section of
// bench/run.mjs; needs relaxed SIMD in Node: node --experimental-wasm-relaxed-simd on Node 20).
// pkg/blockffn.js is imported a second time under another URL, so each build has its own module
// instance; the same kernels (benchGemv, benchFfn from src/bench.rs) then take turns.

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

import { fmt, median } from './util.mjs';

/** Returns rows `{ case, dtype, baselineMs, relaxedMs, speedup }`, or null when relaxed SIMD is unavailable. */
export async function benchRelaxed({ root, baseline, quick, log }) {
  const relaxed = await import(pathToFileURL(join(root, 'pkg/blockffn.js')).href + '?relaxed');
  try {
    await relaxed.default({ module_or_path: readFileSync(join(root, 'pkg/blockffn_relaxed_bg.wasm')) });
  } catch (e) {
    log(`  skipped: ${e.message.split('\n')[0]} (run node with --experimental-wasm-relaxed-simd)`);
    return null;
  }
  const cases = [];
  for (const dtype of ['f32', 'f16', 'q8']) {
    cases.push([`GEMV 768×768`, dtype, (m) => new m.benchGemv(768, 768, dtype)]);
    cases.push([`GEMV 3072×768`, dtype, (m) => new m.benchGemv(3072, 768, dtype)]);
    cases.push([`sparse FFN layer, one token, 10/48 experts`, dtype, (m) => new m.benchFfn(dtype, 'sparse')]);
    cases.push([`chunk of 8 tokens × 10 experts, union 14 of 48`, dtype, (m) => new m.benchFfn(dtype, 'chunk')]);
  }
  const rows = [];
  for (const [name, dtype, make] of cases) {
    log(`relaxed vs baseline: ${name} ${dtype}...`);
    const a = make(baseline);
    const b = make(relaxed);
    const n = Math.max(1, Math.ceil(40 / Math.max(a.run(3), 1e-3)));
    b.run(3);
    const ta = [];
    const tb = [];
    for (let r = 0; r < (quick ? 3 : 9); r++) {
      ta.push(a.run(n));
      tb.push(b.run(n));
    }
    a.free();
    b.free();
    rows.push({ case: name, dtype, baselineMs: median(ta), relaxedMs: median(tb), speedup: median(ta) / median(tb) });
  }
  return rows;
}

export function printRelaxed(rows) {
  const f = (v, d = 3) => fmt(v, d);
  console.log('\n| relaxed SIMD vs SIMD128, same process (alternating) | dtype | SIMD128 ms | relaxed ms | speed-up |');
  console.log('|---|---|---|---|---|');
  for (const r of rows) console.log(`| ${r.case} | ${r.dtype} | ${f(r.baselineMs)} | ${f(r.relaxedMs)} | ${f(r.speedup, 2)}× |`);
  const by = (d, c) => rows.find((r) => r.dtype === d && r.case.startsWith(c));
  for (const d of ['f32', 'f16', 'q8']) {
    const one = by(d, 'sparse');
    const chunk = by(d, 'chunk');
    if (one && chunk) {
      console.log(`${d}: chunk ÷ one token = ${f(chunk.baselineMs / one.baselineMs, 2)} (SIMD128), ${f(chunk.relaxedMs / one.relaxedMs, 2)} (relaxed)`);
    }
  }
}
