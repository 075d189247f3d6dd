// End to end: a random model with BlockFFN-Small's exact shapes at controlled activation (the
// section "end to end: random Small-shaped model" of bench/run.mjs).
//
// bench/make_small_random.py draws it (cached under target/bench/; the first run takes ≈ 5 min),
// calibrates its routers to 20% and 10% active experts and converts it with the CLI to f32, f16 and
// q8. Each package is loaded through the npm API (createEngine({ worker: false }), engine.load(dir))
// and measured, sparse and dense taking turns, medians:
// - prefill tok/s of a 128-token prompt and decode tok/s of the new tokens (greedy, ignoreEos:
//   temperature sampling would sort 122,753 logits a token), through engine.generate;
// - chunk mode (benchSpans, src/bench.rs): tokens after a short context run in spans of k with the
//   KV cache and the logits of every position: sparse k = 1 (decode), sparse k = 8 (forward_chunk:
//   8-token drafts verified in one pass, all accepted: the bound of speculative decoding with a
//   perfect draft), dense k = 1 and k = 8.
// Prompt and spans are held-out tokens (not used to calibrate the routers).

import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';

import { fmt, lastLine, median } from './util.mjs';

const MODES = ['sparse', 'dense'];
const SPANS = [
  ['sparse', 1],
  ['sparse', 8],
  ['dense', 1],
  ['dense', 8],
];

/** Runs the section; returns its rows, or null (with a message) when python/torch or the CLI are missing. */
export async function benchSmall({ root, wasm, engine, quick, log }) {
  const cli = join(root, 'target/release/blockffn');
  if (!existsSync(cli)) {
    log('  skipped: the CLI is missing (cargo build --release --features cli)');
    return null;
  }
  // Sized for ≈ 4 min in all (the prefill of 128 tokens dominates: 25–140 tok/s).
  const [reps, newTokens] = quick ? [1, 8] : [3, 16];
  const [spanReps, ctx, spanTokens] = quick ? [1, 8, 16] : [2, 16, 24];
  const rows = [];
  for (const activation of [0.2, 0.1]) {
    const script = join(root, 'bench/make_small_random.py');
    const r = spawnSync('python3', [script, '--activation', String(activation), '--cli', cli], {
      encoding: 'utf8',
      maxBuffer: 64 << 20,
    });
    if (r.status !== 0) {
      log(`  skipped: ${r.error ? `python3: ${r.error.message}` : lastLine(r.stderr)}`);
      return null;
    }
    const made = JSON.parse(lastLine(r.stdout));
    const prompt = made.evalIds.slice(0, 128);
    const spanIds = Uint32Array.from(made.evalIds.slice(0, ctx + spanTokens));
    for (const dtype of ['f32', 'f16', 'q8']) {
      log(`end to end: ${made.name} as ${dtype}...`);
      const t0 = performance.now();
      const info = await engine.load(made.packages[dtype]);
      const loadSeconds = (performance.now() - t0) / 1000;
      const { wasmMemoryBytes } = await engine.runtimeInfo();
      const gen = async (mode, maxTokens, ids = prompt) => {
        let last;
        for await (const c of engine.generate(ids, { maxTokens, mode, ignoreEos: true })) last = c;
        return last.stats;
      };
      for (const mode of MODES) await gen(mode, 2, prompt.slice(0, 8)); // warm-up
      const runs = { sparse: [], dense: [] };
      for (let i = 0; i < reps; i++) for (const mode of MODES) runs[mode].push(await gen(mode, newTokens));
      // The wasm Engine behind the npm API (same wasm instance as `wasm`).
      const inner = engine._model.engine;
      const spans = SPANS.map(() => []);
      for (let i = 0; i < spanReps; i++) {
        SPANS.forEach(([mode, k], j) => spans[j].push(wasm.benchSpans(inner, spanIds, ctx, k, mode === 'dense')));
      }
      const per = (mode, pick) => median(runs[mode].map(pick));
      rows.push({
        model: made.name,
        activation,
        dtype,
        weightBytes: info.weightBytes,
        loadSeconds,
        wasmMemoryBytes,
        promptTokens: prompt.length,
        newTokens,
        prefillTokensPerSecond: Object.fromEntries(MODES.map((m) => [m, per(m, (s) => (s.promptTokens * 1000) / s.prefillMs)])),
        decodeTokensPerSecond: Object.fromEntries(MODES.map((m) => [m, per(m, (s) => s.tokensPerSecond)])),
        decodeTls: runs.sparse[0].tls,
        chunk: SPANS.map(([mode, k], j) => {
          const ms = median(spans[j].map((s) => s.msPerToken));
          const { tokens, tls, cls8 } = spans[j][0]; // the same every run
          return { mode, k, tokens, msPerToken: ms, tokensPerSecond: 1000 / ms, tls, cls8 };
        }),
        cliEval: made.cliEval[dtype],
      });
    }
  }
  await engine.unload();
  return rows;
}

/** Prints the section's tables (Markdown). */
export function printSmall(rows) {
  const f = (v, d = 1) => fmt(v, d);
  console.log(
    `\nEnd to end: random model with BlockFFN-Small's shapes (768 hidden, 16 layers, MLA, 48 × 64 experts, vocab 122,753), ` +
      `routers calibrated to 20% / 10% active; ${rows[0].promptTokens}-token prompt, ${rows[0].newTokens} new tokens (greedy), medians`,
  );
  console.log('| model | dtype | weights MB | load s | eval TLS / CLS_8 | prefill tok/s sparse / dense | decode tok/s sparse / dense | decode sparse ÷ dense |');
  console.log('|---|---|---|---|---|---|---|---|');
  for (const r of rows) {
    const [p, d] = [r.prefillTokensPerSecond, r.decodeTokensPerSecond];
    console.log(
      `| ${r.model} | ${r.dtype} | ${f(r.weightBytes / 1e6, 0)} | ${f(r.loadSeconds)} | ${f(r.cliEval?.tls, 3)} / ${f(r.cliEval?.cls8, 3)} | ` +
        `${f(p.sparse)} / ${f(p.dense)} | ${f(d.sparse)} / ${f(d.dense)} | ${f(d.sparse / d.dense, 2)}× |`,
    );
  }
  const c = rows[0].chunk[0];
  console.log(
    `\nChunk mode (benchSpans): ${c.tokens} tokens after a short context, in spans of k with the KV cache and every position's logits; ` +
      'sparse k = 8 verifies 8-token drafts in one pass (all accepted)',
  );
  console.log('| model | dtype | TLS | CLS_8 | sparse k=1 tok/s | sparse k=8 (chunk) tok/s | dense k=1 tok/s | dense k=8 tok/s | chunk ÷ sparse k=1 | chunk ÷ dense k=1 |');
  console.log('|---|---|---|---|---|---|---|---|---|---|');
  for (const r of rows) {
    const [s1, s8, d1, d8] = r.chunk;
    console.log(
      `| ${r.model} | ${r.dtype} | ${f(s1.tls, 3)} | ${f(s8.cls8, 3)} | ${f(s1.tokensPerSecond)} | ${f(s8.tokensPerSecond)} | ` +
        `${f(d1.tokensPerSecond)} | ${f(d8.tokensPerSecond)} | ${f(s8.tokensPerSecond / s1.tokensPerSecond, 2)}× | ${f(s8.tokensPerSecond / d1.tokensPerSecond, 2)}× |`,
    );
  }
}
