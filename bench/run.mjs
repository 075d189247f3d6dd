// The benchmark harness: one Node process, one thread, the benchmark build of the wasm package
// (target/bench-pkg/: pkg/'s crate with feature `bench`, made by `scripts/build-wasm.sh --bench`; the
// shipped pkg/ has no bench exports). Writes bench/results.json and prints Markdown tables.
//
//   scripts/build-wasm.sh --bench && node bench/run.mjs [--quick] [--no-scalar] [--only small|peer-model]
//   node --experimental-wasm-relaxed-simd bench/run.mjs --simd relaxed    (the relaxed-SIMD build;
//        Node 20 needs the flag) → bench/results-relaxed.json
//   With relaxed SIMD available (the flag), the baseline run also times the relaxed build against it
//   in the same process (section 7; `--only relaxed` runs it alone).
//
// 1. kernels (src/bench.rs inside the wasm): scalar vs SIMD128 at BlockFFN-Small shapes for f32,
//    f16 and q8 — GEMVs, the dense / sparse (20%, 10%) FFN layer, chunk verification of 8 tokens,
//    the LM head, and a decode step at Small shapes composed of those kernels — plus this
//    machine's streaming bandwidth and SIMD peak, so every row has its roofline fraction;
// 2. a peer in the same run: the same dense f32 products through onnxruntime-web's wasm backend
//    (what transformers.js runs on), one thread, alternating with ours;
// 3. end to end through the npm API: the embedded demo model, prefill and decode tokens/s,
//    sparse vs dense;
// 4. the PyTorch reference decoding at Small shapes;
// 5. end to end: a random model with BlockFFN-Small's exact shapes with its routers calibrated to
//    20% and 10% active experts, as f32 / f16 / q8: prefill, decode (sparse vs dense) and chunk mode
//    (bench/e2e_small.mjs). Not with --quick; `--only small` runs this section alone and updates
//    `e2eSmall` in bench/results.json.
// 6. peer: the demo model through onnxruntime-web — the PyTorch reference exported to ONNX
//    (bench/export_onnx.py, cached under target/bench/onnx/; needs bench/requirements.txt, skipped
//    with a message without them) and run by onnxruntime-web's wasm backend with a KV cache, one
//    thread, alternating with our engine: prefill / decode tok/s, greedy tokens compared
//    (bench/peer_model.mjs). Not with --quick; `--only peer-model` runs this section alone and
//    updates `peerModel` in bench/results.json.

import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import * as ort from 'onnxruntime-web';

import { benchSmall, printSmall } from './e2e_small.mjs';
import { benchPeerModel, printPeerModel } from './peer_model.mjs';
import { benchRelaxed, printRelaxed } from './relaxed.mjs';
import { matmulModel } from './onnx.mjs';
import { demoAs, fmt, median } from './util.mjs';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const argv = process.argv.slice(2);
const args = new Set(argv);
const quick = args.has('--quick');
const scalar = !args.has('--no-scalar');
const only = argv.includes('--only') ? argv[argv.indexOf('--only') + 1] : null;
const simd = argv.includes('--simd') ? argv[argv.indexOf('--simd') + 1] : 'baseline';
if (simd !== 'baseline' && simd !== 'relaxed') throw new Error(`--simd takes "baseline" or "relaxed", got ${simd}`);
const resultsPath = join(ROOT, simd === 'relaxed' ? 'bench/results-relaxed.json' : 'bench/results.json');

// One wasm instance per process: the kernels below and the npm API (the package's js/ copied next to
// the bench glue, target/bench-pkg/js) share it.
const BENCH_PKG = join(ROOT, 'target/bench-pkg');
if (!existsSync(join(BENCH_PKG, 'pkg/blockffn.js')) || !existsSync(join(BENCH_PKG, 'js/index.js'))) {
  console.error('the benchmark build is missing: run scripts/build-wasm.sh --bench first');
  process.exit(2);
}
const wasmMod = await import(join(BENCH_PKG, 'pkg/blockffn.js'));
await wasmMod.default({
  module_or_path: readFileSync(join(BENCH_PKG, simd === 'relaxed' ? 'pkg/blockffn_relaxed_bg.wasm' : 'pkg/blockffn_bg.wasm')),
});

const log = (...a) => console.error(...a);
const { createEngine } = await import(join(BENCH_PKG, 'js/index.js'));

// `--only SECTION`: runs one section and merges its record into the results file under `key`.
const onlySections = {
  small: {
    key: 'e2eSmall',
    what: 'end to end: random Small-shaped model',
    run: async () => benchSmall({ root: ROOT, wasm: wasmMod, engine: await createEngine({ worker: false, simd }), quick, log }),
    print: (r) => printSmall(r),
  },
  'peer-model': {
    key: 'peerModel',
    what: 'peer: the demo model through onnxruntime-web',
    run: () => benchPeerModel({ root: ROOT, createEngine, simd, log }),
    print: (r) => printPeerModel(r),
  },
  relaxed: {
    key: 'relaxedVsBaseline',
    what: 'relaxed SIMD vs SIMD128',
    run: async () => (simd === 'baseline' ? benchRelaxed({ root: BENCH_PKG, baseline: wasmMod, quick, log }) : null),
    print: (r) => printRelaxed(r),
  },
};
if (only !== null) {
  const sec = onlySections[only];
  if (!sec) throw new Error(`--only takes ${Object.keys(onlySections).join(', ')}; got ${only}`);
  log(`${sec.what} (only)...`);
  const record = await sec.run();
  if (record) {
    const prev = existsSync(resultsPath) ? JSON.parse(readFileSync(resultsPath, 'utf8')) : {};
    prev[sec.key] = record;
    prev[`${sec.key}Command`] = `node bench/run.mjs --only ${only}${quick ? ' --quick' : ''}${simd === 'relaxed' ? ' --simd relaxed' : ''}`;
    writeFileSync(resultsPath, JSON.stringify(prev, null, 1) + '\n');
    sec.print(record);
  }
  process.exit(0);
}

// ---- 1. kernels -------------------------------------------------------------------------------
log('kernels (scalar vs SIMD128, f32/f16/q8, Small shapes)...');
const t0 = performance.now();
const kernels = wasmMod.benchKernels({
  dtypes: ['f32', 'f16', 'q8'],
  lmHead: !quick,
  decode: !quick,
  scalar,
  rounds: quick ? 3 : 7,
});
log(`  ${((performance.now() - t0) / 1000).toFixed(0)} s`);

// ---- 2. peer: onnxruntime-web (wasm backend, one thread) ---------------------------------------
ort.env.wasm.numThreads = 1;
ort.env.logLevel = 'error';
const peerShapes = [
  ['GEMV 768×768 (attention projection)', 768, 768],
  ['GEMV 3072×768 (FFN up, all experts)', 3072, 768],
  ['GEMV 768×3072 (FFN down, all experts)', 768, 3072],
  ...(quick ? [] : [['LM head GEMV 122,753×768', 122753, 768]]),
];
const peer = [];
for (const [name, rows, cols] of peerShapes) {
  log(`peer: ${name}...`);
  const ours = new wasmMod.benchGemv(rows, cols, 'f32');
  const w = new Float32Array(rows * cols);
  for (let i = 0; i < w.length; i++) w[i] = Math.sin(i * 0.7) * 0.05;
  const session = await ort.InferenceSession.create(matmulModel(cols, rows, w), { executionProviders: ['wasm'] });
  const x = new ort.Tensor('float32', Float32Array.from({ length: cols }, (_, i) => Math.cos(i)), [1, cols]);
  const ortBatch = async (n) => {
    const t = performance.now();
    for (let i = 0; i < n; i++) await session.run({ X: x });
    return (performance.now() - t) / n;
  };
  // warm both, size batches to ≥ 40 ms, then alternate
  const nOurs = Math.max(1, Math.ceil(40 / Math.max(ours.run(5), 1e-3)));
  const nOrt = Math.max(1, Math.ceil(40 / Math.max(await ortBatch(5), 1e-3)));
  const a = [];
  const b = [];
  for (let r = 0; r < (quick ? 3 : 9); r++) {
    a.push(ours.run(nOurs));
    b.push(await ortBatch(nOrt));
  }
  const oursMs = median(a);
  const ortMs = median(b);
  peer.push({ case: name, rows, cols, dtype: 'f32', oursMs, ortMs, ortOverOurs: ortMs / oursMs, oursGflops: (2 * rows * cols) / (oursMs * 1e6), ortGflops: (2 * rows * cols) / (ortMs * 1e6) });
  ours.free();
  await session.release();
}

// ---- 3. end to end: the demo model through the npm API ---------------------------------------
const engine = await createEngine({ worker: false, simd });
const e2e = [];
const modelDir = join(ROOT, 'models/demo');
const text = readFileSync(join(modelDir, 'validation.txt'), 'utf8');
const prompt = text.slice(0, 1000);
// The demo model as shipped (f16) and re-encoded to f32 and q8 by the CLI (`blockffn convert`
// accepts a runtime package as its source).
const variants = [['f16', modelDir]];
for (const dtype of quick ? [] : ['f32', 'q8']) {
  const dir = demoAs(ROOT, dtype, log);
  if (dir) variants.push([dtype, dir]);
}
for (const [dtype, dir] of variants) {
  log(`end to end: models/demo as ${dtype}...`);
  await engine.load(dir);
  const runOnce = async (mode, maxTokens) => {
    let last;
    for await (const c of engine.generate(prompt, { maxTokens, mode, ignoreEos: true })) last = c;
    return last.stats;
  };
  for (const mode of ['sparse', 'dense']) await runOnce(mode, 4); // warm-up
  const samples = { sparse: [], dense: [] };
  for (let r = 0; r < (quick ? 2 : 5); r++) {
    for (const mode of ['sparse', 'dense']) samples[mode].push(await runOnce(mode, quick ? 32 : 96));
  }
  for (const mode of ['sparse', 'dense']) {
    const s = samples[mode];
    e2e.push({
      model: 'models/demo',
      dtype,
      mode,
      promptTokens: s[0].promptTokens,
      prefillTokensPerSecond: median(s.map((x) => (x.promptTokens * 1000) / x.prefillMs)),
      decodeTokensPerSecond: median(s.map((x) => x.tokensPerSecond)),
      tls: s[0].tls,
    });
  }
}
await engine.unload();

// ---- 4. the PyTorch reference decoding the same shapes on this CPU (one thread) ---------------
let torchRef = null;
if (!quick) {
  log('PyTorch reference decode at Small shapes...');
  const r = spawnSync('python3', [join(ROOT, 'bench/torch_decode.py'), '--threads', '1'], { encoding: 'utf8' });
  if (r.status === 0) torchRef = JSON.parse(r.stdout.trim().split('\n').pop());
  else log(`  skipped: ${(r.stderr || '').trim().split('\n').pop()}`);
}

// ---- 5. end to end: a random model with BlockFFN-Small's shapes at controlled activation --------
let e2eSmall = null;
if (!quick) {
  log('end to end: random Small-shaped model...');
  e2eSmall = await benchSmall({ root: ROOT, wasm: wasmMod, engine, quick, log });
}

// ---- 6. peer: the demo model through onnxruntime-web (exported from the PyTorch reference) ----
let peerModel = null;
if (quick) log('peer: the demo model through onnxruntime-web: skipped with --quick');
else {
  log('peer: the demo model through onnxruntime-web...');
  peerModel = await benchPeerModel({ root: ROOT, createEngine, simd, log });
}

// ---- 7. the relaxed-SIMD build against this one, same process (needs relaxed SIMD in Node) -------
let relaxedVsBaseline = null;
if (simd === 'baseline') {
  log('relaxed SIMD vs SIMD128...');
  relaxedVsBaseline = await benchRelaxed({ root: BENCH_PKG, baseline: wasmMod, quick, log });
}

// ---- results -----------------------------------------------------------------------------------
const results = {
  command: `node bench/run.mjs${quick ? ' --quick' : ''}${scalar ? '' : ' --no-scalar'}${simd === 'relaxed' ? ' --simd relaxed' : ''}`,
  date: new Date().toISOString(),
  machine: {
    cpu: os.cpus()[0]?.model,
    logicalCores: os.cpus().length,
    node: process.version,
    threads: 1,
    wasm: `wasm-${wasmMod.simdVariant()}`,
    ...kernels.machine,
  },
  kernels: kernels.rows,
  peer,
  torchReference: torchRef,
  e2e,
  e2eSmall,
  peerModel,
  relaxedVsBaseline,
};
writeFileSync(resultsPath, JSON.stringify(results, null, 1) + '\n');

const f = fmt;
const m = results.machine;
console.log(`Machine: ${m.cpu}, ${m.logicalCores} logical cores, Node ${m.node}, one thread, ${m.wasm}; streaming read ${f(m.streamGBs, 1)} GB/s, SIMD f32 peak ${f(m.simdPeakGflops, 1)} GFLOP/s (means of the runs ${m.streamGBsRuns.map((v) => f(v, 1)).join(' / ')} and ${m.simdPeakGflopsRuns.map((v) => f(v, 1)).join(' / ')}).\n`);
console.log('| group | case | dtype | SIMD ms | scalar ms | SIMD/scalar | GFLOP/s | GB/s | roofline | notes |');
console.log('|---|---|---|---|---|---|---|---|---|---|');
for (const r of results.kernels) {
  const x = r.extra || {};
  const notes = [
    x.sparseOverFractionDense !== undefined ? `sparse ÷ (fraction × dense) = ${f(x.sparseOverFractionDense)}` : '',
    x.chunkOverOneToken !== undefined
      ? `chunk ÷ one token = ${f(x.chunkOverOneToken)} (one token ${f(x.oneTokenMs, 3)} ms` +
        (x.eightTokensOneByOneMs !== undefined ? `, 8 one by one ${f(x.eightTokensOneByOneMs, 3)} ms` : '') +
        (x.upMs !== undefined ? `; chunk up ${f(x.upMs, 3)} + down ${f(x.downMs, 3)} ms` : '') +
        ')'
      : '',
    x.tokensPerSecond !== undefined ? `${f(x.tokensPerSecond, 1)} tok/s` : '',
    x.denseOverSparse !== undefined ? `dense ÷ sparse = ${f(x.denseOverSparse)}` : '',
    x.streamGBs !== undefined ? `stream ${f(x.streamGBs, 1)} GB/s alongside` : '',
  ].filter(Boolean).join('; ');
  console.log(`| ${r.group} | ${r.case} | ${r.dtype} | ${f(r.simdMs, 3)} | ${f(r.scalarMs, 3)} | ${f(r.simdOverScalar, 1)}× | ${f(r.simdGflops, 1)} | ${f(r.simdGbs, 1)} | ${f(100 * x.rooflineFraction, 0)}% | ${notes} |`);
}
console.log('\n| peer case (f32, one thread) | ours ms | onnxruntime-web ms | ours GFLOP/s | ort GFLOP/s | ort ÷ ours |');
console.log('|---|---|---|---|---|---|');
for (const p of peer) console.log(`| ${p.case} | ${f(p.oursMs, 3)} | ${f(p.ortMs, 3)} | ${f(p.oursGflops, 1)} | ${f(p.ortGflops, 1)} | ${f(p.ortOverOurs)}× |`);
console.log('\n| end to end | dtype | mode | prompt tokens | prefill tok/s | decode tok/s |');
console.log('|---|---|---|---|---|---|');
for (const e of e2e) console.log(`| ${e.model} | ${e.dtype} | ${e.mode} | ${e.promptTokens} | ${f(e.prefillTokensPerSecond, 1)} | ${f(e.decodeTokensPerSecond, 1)} |`);
if (torchRef) {
  console.log(`\nPyTorch reference (${torchRef.torch}, f32, eager, ${torchRef.threads} thread), one decode step at Small shapes (all experts): ${f(torchRef.medianMs, 1)} ms`);
  for (const r of results.kernels.filter((k) => k.group === 'decode' && k.dtype === 'f32')) {
    console.log(`  ours ${r.case}: ${f(r.simdMs, 1)} ms → ${f(torchRef.medianMs / r.simdMs)}× the reference's speed`);
  }
}
for (const [dtype] of variants) {
  const sp = e2e.find((e) => e.mode === 'sparse' && e.dtype === dtype);
  const de = e2e.find((e) => e.mode === 'dense' && e.dtype === dtype);
  console.log(`${dtype}: sparse ÷ dense decode ${f(sp.decodeTokensPerSecond / de.decodeTokensPerSecond)}×, prefill ${f(sp.prefillTokensPerSecond / de.prefillTokensPerSecond)}×`);
}
if (e2eSmall) printSmall(e2eSmall);
if (peerModel) printPeerModel(peerModel);
if (relaxedVsBaseline) printRelaxed(relaxedVsBaseline);
