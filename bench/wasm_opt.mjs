// Does wasm-opt pay? The shipped build (pkg/, no wasm-opt) against the same build passed through
// `wasm-opt -O3` (npm binaryen), in one Node process, one thread, rounds interleaved, medians:
// prefill and decode tokens/s of the demo model through the npm API, and the files' sizes.
//
//   bash scripts/build-wasm.sh && npm install
//   node --experimental-wasm-relaxed-simd bench/wasm_opt.mjs [--rounds 7] [--simd baseline|relaxed]
//
// Each variant is a copy of the package (js/ + pkg/) under target/wasm-opt-bench/<variant>/, so
// each gets its own module instance.

import { execFileSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { gzipSync } from 'node:zlib';

import { fmt, median } from './util.mjs';

const ROOT = fileURLToPath(new URL('../', import.meta.url));
const args = process.argv.slice(2);
const opt = (name, dflt) => (args.includes(name) ? args[args.indexOf(name) + 1] : dflt);
const ROUNDS = Number(opt('--rounds', 7));
const SIMD = opt('--simd', 'baseline');
const WASM_OPT = join(ROOT, 'node_modules/.bin/wasm-opt');
const FILES = ['blockffn_bg.wasm', 'blockffn_relaxed_bg.wasm'];
if (!existsSync(join(ROOT, 'pkg/blockffn.js'))) throw new Error('pkg/ is missing: bash scripts/build-wasm.sh');
if (!existsSync(WASM_OPT)) throw new Error('node_modules/.bin/wasm-opt is missing: npm install');

const base = join(ROOT, 'target/wasm-opt-bench');
rmSync(base, { recursive: true, force: true });
const variants = {};
for (const name of ['shipped', 'wasm-opt -O3']) {
  const dir = join(base, name === 'shipped' ? 'shipped' : 'opt');
  mkdirSync(dir, { recursive: true });
  cpSync(join(ROOT, 'js'), join(dir, 'js'), { recursive: true });
  cpSync(join(ROOT, 'pkg'), join(dir, 'pkg'), { recursive: true });
  let optSeconds = 0;
  if (name !== 'shipped') {
    const t0 = performance.now();
    for (const f of FILES) {
      const p = join(dir, 'pkg', f);
      execFileSync(WASM_OPT, [
        '-O3', '--enable-simd', '--enable-relaxed-simd', '--enable-bulk-memory', '--enable-nontrapping-float-to-int',
        '--enable-reference-types', '--enable-multivalue', '--enable-sign-ext', p, '-o', p,
      ]);
    }
    optSeconds = (performance.now() - t0) / 1000;
  }
  const sizes = Object.fromEntries(
    FILES.map((f) => {
      const p = join(dir, 'pkg', f);
      return [f, { bytes: statSync(p).size, gzipped: gzipSync(readFileSync(p), { level: 9 }).length }];
    }),
  );
  const { createEngine } = await import(pathToFileURL(join(dir, 'js/index.js')).href);
  const engine = await createEngine({ worker: false, simd: SIMD });
  await engine.load(join(ROOT, 'models/demo'));
  variants[name] = { engine, sizes, optSeconds, prefill: [], decode: [] };
}

const text = readFileSync(join(ROOT, 'models/demo/validation.txt'), 'utf8').slice(0, 20000);
const anyEngine = Object.values(variants)[0].engine;
const prefillIds = Array.from(await anyEngine.tokenize(text)).slice(0, 512);
async function run(engine, prompt, maxTokens) {
  let last;
  for await (const c of engine.generate(prompt, { maxTokens, ignoreEos: true })) last = c;
  return last.stats;
}
for (const v of Object.values(variants)) await run(v.engine, 'Once', 4); // warm-up
for (let r = 0; r < ROUNDS; r++) {
  for (const v of Object.values(variants)) {
    const p = await run(v.engine, prefillIds, 1);
    v.prefill.push((prefillIds.length * 1000) / p.prefillMs);
    const d = await run(v.engine, 'Once upon a time', 128);
    v.decode.push(d.tokensPerSecond);
  }
}

const os = await import('node:os');
console.log(`machine: ${os.cpus()[0].model}, ${os.cpus().length} cores; node ${process.version}; simd: ${SIMD}; rounds: ${ROUNDS} (medians)`);
console.log('| build | SIMD128 wasm bytes (gzip) | relaxed wasm bytes (gzip) | prefill 512 tok/s | decode 128 tok/s | wasm-opt time |');
console.log('|---|---|---|---|---|---|');
for (const [name, v] of Object.entries(variants)) {
  const s = (f) => `${v.sizes[f].bytes.toLocaleString('en')} (${v.sizes[f].gzipped.toLocaleString('en')})`;
  console.log(
    `| ${name} | ${s(FILES[0])} | ${s(FILES[1])} | ${fmt(median(v.prefill), 0)} | ${fmt(median(v.decode), 0)} | ${v.optSeconds ? `${fmt(v.optSeconds, 1)} s` : '—'} |`,
  );
}
console.log(JSON.stringify(Object.fromEntries(Object.entries(variants).map(([k, v]) => [k, { sizes: v.sizes, prefill: v.prefill, decode: v.decode, optSeconds: v.optSeconds }]))));
