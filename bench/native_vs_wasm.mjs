// Native CLI (x86-64 AVX2 kernels) vs the wasm build, side by side in one run on one machine:
// prefill/eval and decode tokens per second on the demo model, rounds interleaved, medians.
//
//   cargo build --release --features cli && bash scripts/build-wasm.sh
//   node --experimental-wasm-relaxed-simd bench/native_vs_wasm.mjs [--rounds 5] [--simd auto|baseline|relaxed]
//
// Native: wall time of one `blockffn` process (model load included: ~10 ms for the demo), single
// segment, so one thread either way. Wasm: the npm package in this Node process, in-thread
// engine; prefill from `stats.prefillMs`, decode from `stats.tokensPerSecond`.

import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

import { median, fmt } from './util.mjs';

const ROOT = fileURLToPath(new URL('../', import.meta.url));
const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : dflt;
};
const ROUNDS = Number(opt('--rounds', 5));
const SIMD = opt('--simd', 'auto');
const BIN = join(ROOT, 'target/release/blockffn');
const MODEL = join(ROOT, 'models/demo');
const PREFILL = 1023; // + 1 generated token = the demo's 1,024-token context
const DECODE = 256;
const PROMPT = 'Once upon a time';

const { createEngine } = await import(pathToFileURL(join(ROOT, 'js/index.js')).href);
const engine = await createEngine({ simd: SIMD });
await engine.load(MODEL);
const info = await engine.runtimeInfo();

// The same 1,023 validation tokens for both sides.
const text = readFileSync(join(MODEL, 'validation.txt'), 'utf8').slice(0, 20000);
const tmp = mkdtempSync(join(tmpdir(), 'bff-nvw-'));
const evalText = join(tmp, 'eval.txt');
writeFileSync(evalText, text);
function nativeSeconds(cliArgs) {
  const t0 = process.hrtime.bigint();
  const r = spawnSync(BIN, cliArgs, { encoding: 'utf8', env: { ...process.env } });
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  if (r.status !== 0) throw new Error(`blockffn ${cliArgs[0]} failed: ${r.stderr}`);
  return { s, out: r.stdout };
}

async function wasmRun(prompt, maxTokens) {
  let last;
  for await (const c of engine.generate(prompt, { maxTokens, ignoreEos: true })) last = c;
  return last.stats;
}

const rows = { nativeEval: [], wasmPrefill: [], nativeDecode: [], wasmDecode: [] };
// The prefill prompt: the first PREFILL tokens of the same text, as ids (one tokenizer for both).
const tok = await engine.tokenize(text);
const prefillIds = Array.from(tok).slice(0, PREFILL);
if (prefillIds.length < PREFILL) throw new Error('validation text too short');

for (let r = 0; r < ROUNDS; r++) {
  const ne = nativeSeconds(['eval', '--model', MODEL, '--text', evalText, '--max-tokens', String(PREFILL + 1), '--json']);
  rows.nativeEval.push((PREFILL + 1) / ne.s); // eval runs all 1,024 tokens (and the LM head at every one)
  const wp = await wasmRun(prefillIds, 1);
  rows.wasmPrefill.push((PREFILL * 1000) / wp.prefillMs);
  const nd = nativeSeconds(['generate', '--model', MODEL, '--prompt', PROMPT, '--max-new-tokens', String(DECODE), '--ignore-eos', '--json']);
  rows.nativeDecode.push(DECODE / nd.s);
  const wd = await wasmRun(PROMPT, DECODE);
  rows.wasmDecode.push(wd.tokensPerSecond);
}

const m = Object.fromEntries(Object.entries(rows).map(([k, v]) => [k, median(v)]));
console.log(`machine: ${(await import('node:os')).cpus()[0].model}, ${(await import('node:os')).cpus().length} cores; node ${process.version}`);
console.log(`wasm build: ${info.backend}; rounds: ${ROUNDS} (medians)`);
console.log('| demo model | native CLI tok/s | wasm tok/s | native / wasm |');
console.log('|---|---|---|---|');
console.log(`| prefill / eval, ${PREFILL} tokens | ${fmt(m.nativeEval, 0)} | ${fmt(m.wasmPrefill, 0)} | ${fmt(m.nativeEval / m.wasmPrefill)}× |`);
console.log(`| decode, ${DECODE} tokens | ${fmt(m.nativeDecode, 0)} | ${fmt(m.wasmDecode, 0)} | ${fmt(m.nativeDecode / m.wasmDecode)}× |`);
console.log(JSON.stringify({ rows, medians: m }));
await engine.unload?.();
