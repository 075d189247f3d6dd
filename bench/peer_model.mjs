// Peer: the whole demo model through onnxruntime-web (the section "peer: the demo model through
// onnxruntime-web" of bench/run.mjs).
//
// bench/export_onnx.py exports models/demo from the PyTorch reference (train/blockffn_ref, f32) to
// two ONNX graphs under target/bench/onnx/ (cached; the first export takes about a minute) and
// checks them against the reference with onnxruntime (Python) and against our engine (`blockffn
// logits`): a prefill graph (input_ids → logits of every position) and a KV-cache graph (input_ids
// + past keys/values → last position's logits + present keys/values). ONNX has no data-dependent
// sparse path, so both compute every expert.
//
// Here, in this Node process: onnxruntime-web's wasm backend (what transformers.js runs on), one
// thread, runs the KV-cache graph as a runtime does — the 128-token prompt in one run, then one
// token a run with the cache fed back, greedy, 32 new tokens — alternating with our engine through
// the npm API (createEngine + engine.generate, sparse and dense; the shipped f16 package and its
// f32 re-encoding when the CLI is built), same prompt ids, medians of the rounds. Prefill tok/s =
// prompt tokens ÷ time to the first token; decode tok/s = the tokens after the first ÷ their time
// (the definitions of engine.generate's stats). The prefill-only graph (logits of all 128
// positions, as a plain `model(input_ids)` export gives) is timed once a round too. ORT's greedy
// tokens must equal ours; a warning names the first position where they do not.

import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

import * as ort from 'onnxruntime-web';

import { demoAs, fmt, lastLine, median } from './util.mjs';

const now = () => performance.now();

const PROMPT_TOKENS = 128;
const NEW_TOKENS = 32;
const ROUNDS = 7;

function argmax(a) {
  let best = 0;
  for (let i = 1; i < a.length; i++) if (a[i] > a[best]) best = i;
  return best;
}

const idsTensor = (ids) => new ort.Tensor('int64', BigInt64Array.from(ids, (v) => BigInt(v)), [1, ids.length]);

/** Greedy generation through the KV-cache graph, the way a runtime drives it. */
async function ortGenerate(session, meta, ids, n) {
  const L = meta.numLayers;
  const feeds = { input_ids: idsTensor(ids) };
  for (let i = 0; i < L; i++) {
    feeds[`past.${i}.key`] = new ort.Tensor('float32', new Float32Array(0), [1, meta.cacheHeads, 0, meta.keyDim]);
    feeds[`past.${i}.value`] = new ort.Tensor('float32', new Float32Array(0), [1, meta.cacheHeads, 0, meta.valueDim]);
  }
  const tokens = [];
  const t0 = now();
  let tFirst = 0;
  for (let step = 0; step < n; step++) {
    const out = await session.run(feeds);
    const next = argmax(out.logits.data);
    tokens.push(next);
    if (step === 0) tFirst = now();
    feeds.input_ids = idsTensor([next]);
    for (let i = 0; i < L; i++) {
      feeds[`past.${i}.key`] = out[`present.${i}.key`];
      feeds[`past.${i}.value`] = out[`present.${i}.value`];
    }
  }
  const t1 = now();
  return { tokens, prefillMs: tFirst - t0, decodeTokensPerSecond: n > 1 ? ((n - 1) * 1000) / (t1 - tFirst) : null };
}

async function oursGenerate(engine, ids, n, mode) {
  const tokens = [];
  let last;
  for await (const c of engine.generate(ids, { maxTokens: n, mode, ignoreEos: true })) {
    tokens.push(...c.tokenIds);
    last = c;
  }
  return { tokens, prefillMs: last.stats.prefillMs, decodeTokensPerSecond: last.stats.tokensPerSecond, tls: last.stats.tls };
}

const firstDiff = (a, b) => {
  for (let i = 0; i < Math.min(a.length, b.length); i++) if (a[i] !== b[i]) return i;
  return a.length === b.length ? null : Math.min(a.length, b.length);
};

/** Runs the section; returns its record, or null (with a message) when python/onnx are missing. */
export async function benchPeerModel({ root, createEngine, simd, log }) {
  ort.env.wasm.numThreads = 1;
  ort.env.logLevel = 'error';
  const modelDir = join(root, 'models/demo');
  const cli = join(root, 'target/release/blockffn');

  // 1. the ONNX graphs (cached), checked against the reference and our engine
  const t0 = now();
  const r = spawnSync('python3', [join(root, 'bench/export_onnx.py'), '--model', modelDir, '--cli', cli], {
    encoding: 'utf8',
    maxBuffer: 64 << 20,
    timeout: 15 * 60 * 1000,
  });
  if (r.status !== 0) {
    const why = r.error ? `python3: ${r.error.message}` : lastLine(r.stderr);
    const hint = /No module named|ModuleNotFoundError/.test(r.stderr || '') ? ' (pip install -r bench/requirements.txt)' : '';
    log(`  skipped: ${why}${hint}`);
    return null;
  }
  const meta = JSON.parse(lastLine(r.stdout));
  const exportSeconds = (now() - t0) / 1000;
  const c = meta.checks;
  log(
    `  ONNX graphs ${meta.cached ? 'cached' : `exported in ${exportSeconds.toFixed(0)} s`}; max |Δlogit| vs the PyTorch reference: ` +
      `prefill graph ${c.prefillVsReference.toExponential(1)}, KV graph ${c.kvVsReference.toExponential(1)}` +
      (c.engineSparseVsOrt !== undefined ? `; our engine vs ORT (Python) ${c.engineSparseVsOrt.toExponential(1)}` : ''),
  );

  // 2. sessions: onnxruntime-web, wasm backend, one thread
  const opts = { executionProviders: ['wasm'], graphOptimizationLevel: 'all' };
  let t = now();
  const kv = await ort.InferenceSession.create(readFileSync(join(root, meta.kv)), opts);
  const sessionSeconds = (now() - t) / 1000;
  const prefillOnly = await ort.InferenceSession.create(readFileSync(join(root, meta.prefill)), opts);

  // ours: the shipped f16 package and (when the CLI can make it) its f32 re-encoding, one engine each
  const packages = [['f16', modelDir]];
  const f32Dir = demoAs(root, 'f32', log);
  if (f32Dir) packages.push(['f32', f32Dir]);
  const ours = [];
  for (const [dtype, dir] of packages) {
    const engine = await createEngine({ worker: false, simd });
    await engine.load(dir);
    ours.push({ dtype, engine });
  }
  const ids = Array.from(await ours[0].engine.tokenize(readFileSync(join(modelDir, 'validation.txt'), 'utf8').slice(0, 20 * PROMPT_TOKENS))).slice(0, PROMPT_TOKENS);
  if (ids.length < PROMPT_TOKENS) throw new Error(`validation.txt gives only ${ids.length} tokens`);

  // 3. alternate: ORT (KV graph), ORT (prefill-only graph), ours f16 sparse / dense, ours f32 sparse / dense
  const cases = [
    { key: 'ort', run: (n) => ortGenerate(kv, meta, ids, n) },
    ...ours.flatMap(({ dtype, engine }) => ['sparse', 'dense'].map((mode) => ({ key: `ours-${dtype}-${mode}`, dtype, mode, run: (n) => oursGenerate(engine, ids, n, mode) }))),
  ];
  const prefillGraph = async () => {
    const s = now();
    const out = await prefillOnly.run({ input_ids: idsTensor(ids) });
    const ms = now() - s;
    return { ms, first: argmax(out.logits.data.subarray((PROMPT_TOKENS - 1) * meta.vocabSize)) };
  };
  log(`  warm-up, then ${ROUNDS} rounds of ${cases.length} runs (${PROMPT_TOKENS}-token prompt, ${NEW_TOKENS} new tokens, greedy)...`);
  // Full-length warm-up: onnxruntime-web's first runs at each new cache length are up to 3× slower
  // (its allocations grow with the shapes); a 4-token warm-up left a rising trend in the rounds.
  for (const cs of cases) await cs.run(NEW_TOKENS);
  await prefillGraph();
  const samples = Object.fromEntries(cases.map((cs) => [cs.key, []]));
  const prefillGraphMs = [];
  let prefillGraphFirst;
  t = now();
  for (let round = 0; round < ROUNDS; round++) {
    for (const cs of cases) samples[cs.key].push(await cs.run(NEW_TOKENS));
    const p = await prefillGraph();
    prefillGraphMs.push(p.ms);
    prefillGraphFirst = p.first;
  }
  const timedSeconds = (now() - t) / 1000;
  for (const { engine } of ours) await engine.unload();
  await kv.release();
  await prefillOnly.release();

  // 4. the greedy tokens must agree
  const ortTokens = samples.ort[0].tokens;
  const warnings = [];
  if (prefillGraphFirst !== ortTokens[0]) warnings.push(`the prefill-only graph's first token ${prefillGraphFirst} ≠ the KV graph's ${ortTokens[0]}`);
  const rows = cases.map((cs) => {
    const s = samples[cs.key];
    const tokens = s[0].tokens;
    const diverge = firstDiff(ortTokens, tokens);
    if (cs.key !== 'ort' && diverge !== null) warnings.push(`ours ${cs.dtype} ${cs.mode}: greedy tokens diverge from ORT's at new token ${diverge} (ORT ${ortTokens[diverge]}, ours ${tokens[diverge]})`);
    return {
      runtime: cs.key === 'ort' ? 'onnxruntime-web' : 'ours',
      dtype: cs.key === 'ort' ? 'f32' : cs.dtype,
      ffn: cs.key === 'ort' ? 'dense (every expert)' : cs.mode,
      prefillTokensPerSecond: median(s.map((x) => (PROMPT_TOKENS * 1000) / x.prefillMs)),
      decodeTokensPerSecond: median(s.map((x) => x.decodeTokensPerSecond)),
      prefillMsRuns: s.map((x) => x.prefillMs),
      decodeTokensPerSecondRuns: s.map((x) => x.decodeTokensPerSecond),
      tls: s[0].tls,
      greedyAgreesWithOrt: diverge === null,
      firstDivergence: diverge,
    };
  });
  for (const w of warnings) log(`  WARNING: ${w}`);
  const ortVersion = JSON.parse(readFileSync(join(root, 'node_modules/onnxruntime-web/package.json'), 'utf8')).version;
  const { ids: checkIds, ...checks } = c;
  return {
    model: 'models/demo',
    promptTokens: PROMPT_TOKENS,
    newTokens: NEW_TOKENS,
    rounds: ROUNDS,
    promptIds: ids,
    ort: {
      version: ortVersion,
      backend: 'wasm',
      threads: 1,
      kvGraph: meta.kv,
      prefillGraph: meta.prefill,
      graphBytes: meta.bytes,
      sessionSeconds,
      exported: !meta.cached,
      exportSeconds: meta.cached ? null : exportSeconds,
      prefillGraphTokensPerSecond: median(prefillGraphMs.map((ms) => (PROMPT_TOKENS * 1000) / ms)),
      greedyTokens: ortTokens,
    },
    checks: { ...checks, promptTokens: checkIds.length },
    rows,
    warnings,
    timedSeconds,
  };
}

export function printPeerModel(p) {
  const f = (v, d = 1) => fmt(v, d);
  const e = (v) => (v === undefined || v === null ? '–' : Number(v).toExponential(1));
  const o = p.rows.find((r) => r.runtime === 'onnxruntime-web');
  console.log(
    `\nPeer: the demo model through onnxruntime-web ${p.ort.version} (wasm backend, one thread; the PyTorch reference exported to ONNX, ` +
      `KV-cache graph) vs ours (npm API), ${p.promptTokens}-token prompt, ${p.newTokens} new tokens (greedy), medians of ${p.rounds} alternating rounds`,
  );
  console.log('| runtime | weights | FFN | prefill tok/s | decode tok/s | ÷ ORT prefill | ÷ ORT decode | greedy = ORT |');
  console.log('|---|---|---|---|---|---|---|---|');
  for (const r of p.rows) {
    console.log(
      `| ${r.runtime} | ${r.dtype} | ${r.ffn} | ${f(r.prefillTokensPerSecond)} | ${f(r.decodeTokensPerSecond)} | ` +
        `${f(r.prefillTokensPerSecond / o.prefillTokensPerSecond, 2)}× | ${f(r.decodeTokensPerSecond / o.decodeTokensPerSecond, 2)}× | ` +
        `${r.runtime === 'onnxruntime-web' ? '–' : r.greedyAgreesWithOrt ? `✓ (${p.newTokens})` : `✗ at ${r.firstDivergence}`} |`,
    );
  }
  const c = p.checks;
  console.log(
    `ORT prefill-only graph (logits of all ${p.promptTokens} positions): ${f(p.ort.prefillGraphTokensPerSecond)} tok/s. ` +
      `Checks on a ${c.promptTokens}-token prompt, max |Δlogit|: ONNX prefill graph vs PyTorch ${e(c.prefillVsReference)}, ` +
      `KV graph vs PyTorch ${e(c.kvVsReference)}, our engine (sparse / dense) vs PyTorch ${e(c.engineSparseVsReference)} / ${e(c.engineDenseVsReference)}, ` +
      `vs ORT ${e(c.engineSparseVsOrt)} / ${e(c.engineDenseVsOrt)}.`,
  );
  for (const w of p.warnings) console.log(`WARNING: ${w}`);
}
