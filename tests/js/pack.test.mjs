// The `npm pack` tarball installs offline into a fresh project and works from a plain Node
// script, and its type declarations type-check a TypeScript consumer.
// BLOCKFFN_TARBALL (set by scripts/test.sh) names a tarball already packed; else one is packed here.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';

import { FIXTURE, ROOT, cliGenerate } from './helpers.mjs';

let dir;
let app;

before(() => {
  dir = mkdtempSync(join(tmpdir(), 'blockffn-pack-'));
  let tarball = process.env.BLOCKFFN_TARBALL;
  if (!tarball) {
    const out = execFileSync('npm', ['pack', '--json', '--pack-destination', dir], { cwd: ROOT, encoding: 'utf8' });
    tarball = join(dir, JSON.parse(out)[0].filename);
  }
  app = join(dir, 'app');
  execFileSync('mkdir', ['-p', app]);
  writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'scratch-app', private: true, type: 'module' }));
  execFileSync('npm', ['install', '--offline', '--no-audit', '--no-fund', '--ignore-scripts', tarball], {
    cwd: app,
    encoding: 'utf8',
  });
});

after(() => rmSync(dir, { recursive: true, force: true }));

test('the tarball holds the ES module, the types and the wasm, and no runtime dependencies', () => {
  const p = join(app, 'node_modules/blockffn');
  const meta = JSON.parse(readFileSync(join(p, 'package.json'), 'utf8'));
  assert.equal(meta.type, 'module');
  assert.equal(meta.dependencies, undefined);
  assert.equal(meta.peerDependencies, undefined);
  for (const f of ['js/index.js', 'js/index.d.ts', 'js/worker.js', 'pkg/blockffn.js', 'pkg/blockffn_bg.wasm', 'pkg/blockffn_relaxed_bg.wasm', 'docs/API.md']) {
    assert.ok(existsSync(join(p, f)), `${f} is in the package`);
  }
  const lock = JSON.parse(readFileSync(join(app, 'package-lock.json'), 'utf8'));
  assert.deepEqual(Object.keys(lock.packages).sort(), ['', 'node_modules/blockffn'], 'nothing else was installed');
});

test('a plain Node script imports it by name and generates what the CLI generates', () => {
  writeFileSync(
    join(app, 'main.js'),
    `import { createEngine, BlockffnError, relaxedSimdSupported } from 'blockffn';
const simd = process.argv[3];
const engine = await createEngine(simd ? { simd } : {});
const info = await engine.load(process.argv[2]);
const ids = [];
let text = '';
for await (const c of engine.generate('The river', { maxTokens: 12, temperature: 0.8, seed: 3 })) {
  ids.push(...c.tokenIds);
  text += c.text;
}
let code = null;
try { await engine.load(process.argv[2] + '/nope'); } catch (e) { code = e instanceof BlockffnError && e.code; }
console.log(JSON.stringify({ ids, text, backend: info.backend, code, relaxed: relaxedSimdSupported(),
  worker: import.meta.resolve('blockffn/worker'), wasm: import.meta.resolve('blockffn/blockffn_bg.wasm') }));
`,
  );
  const out = JSON.parse(execFileSync(process.execPath, ['main.js', FIXTURE], { cwd: app, encoding: 'utf8' }));
  const cli = cliGenerate(['--prompt', 'The river', '--max-new-tokens', '12', '--temperature', '0.8', '--seed', '3']);
  assert.deepEqual(out.ids, cli.ids);
  assert.equal(out.text, cli.text);
  assert.equal(out.backend, out.relaxed ? 'wasm-relaxed-simd' : 'wasm-simd128');
  assert.equal(out.code, 'ModelNotFound');
  assert.match(out.worker, /node_modules\/blockffn\/js\/worker\.js$/);
  assert.match(out.wasm, /node_modules\/blockffn\/pkg\/blockffn_bg\.wasm$/);
});

// Node 20 has relaxed SIMD behind a flag; with it, 'auto' picks the relaxed build (fused
// multiply-add) and 'baseline' the SIMD128 one. Both must generate what the CLI generates.
const RELAXED_FLAG = '--experimental-wasm-relaxed-simd';
const flagWorks = (() => {
  try {
    execFileSync(process.execPath, [RELAXED_FLAG, '-e', '0'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
})();

test('simd: auto picks the relaxed-SIMD build where the engine has it, baseline the SIMD128 one; both equal the CLI', { skip: !flagWorks && `node does not take ${RELAXED_FLAG}` }, () => {
  const cli = cliGenerate(['--prompt', 'The river', '--max-new-tokens', '12', '--temperature', '0.8', '--seed', '3']);
  const run = (simd) =>
    JSON.parse(execFileSync(process.execPath, [RELAXED_FLAG, 'main.js', FIXTURE, ...(simd ? [simd] : [])], { cwd: app, encoding: 'utf8' }));
  const auto = run();
  assert.equal(auto.relaxed, true);
  assert.equal(auto.backend, 'wasm-relaxed-simd');
  const base = run('baseline');
  assert.equal(base.backend, 'wasm-simd128');
  for (const out of [auto, base]) {
    assert.deepEqual(out.ids, cli.ids);
    assert.equal(out.text, cli.text);
  }
  // Where the engine has no relaxed SIMD (plain Node 20), asking for it is a typed error.
  const plain = JSON.parse(execFileSync(process.execPath, ['main.js', FIXTURE], { cwd: app, encoding: 'utf8' }));
  if (!plain.relaxed) {
    let err = '';
    try {
      execFileSync(process.execPath, ['main.js', FIXTURE, 'relaxed'], { cwd: app, encoding: 'utf8', stdio: 'pipe' });
    } catch (e) {
      err = String(e.stderr);
    }
    assert.match(err, /BlockffnError: this JavaScript engine has no WebAssembly relaxed SIMD/);
  }
});

test('the type declarations check a TypeScript consumer (strict)', (t) => {
  const tsc = join(ROOT, 'node_modules/typescript/bin/tsc');
  if (!existsSync(tsc)) {
    t.skip('typescript is not installed (npm install)');
    return;
  }
  writeFileSync(
    join(app, 'consumer.ts'),
    `import { createEngine, BlockffnError, unpackExperts, hasModelInCache, chatPrompt, chatStops, renderChat, sparsity, expertSavings, modelFileUrl, CLS_WINDOWS, type ModelInfo, type GenerationChunk, type ProgressEvent, type SegmentedPrompt, type SparsityReport } from 'blockffn';
import init, { Engine as WasmEngine } from 'blockffn/wasm';

export async function run(url: string): Promise<string> {
  const engine = await createEngine({ worker: false });
  const phases: ProgressEvent['phase'][] = [];
  const info: ModelInfo = await engine.load(url, { onProgress: (e) => phases.push(e.phase), cache: true, dtype: 'auto' });
  let text = '';
  const ctrl = new AbortController();
  const masks: Uint32Array[] = [];
  for await (const c of engine.generate('hi', { maxTokens: 4, temperature: 0.7, topP: 0.9, seed: 1, stop: ['\\n'], signal: ctrl.signal, mode: 'sparse' })) {
    const chunk: GenerationChunk = c;
    text += chunk.text;
    const sets: number[][] = unpackExperts(chunk.experts[0], info.experts.wordsPerLayer);
    const cls8: number | null = chunk.stats.cls['8'];
    void sets; void cls8; void chunk.stats.tokensPerSecond; void chunk.finishReason;
    masks.push(chunk.experts[0]);
  }
  const report: SparsityReport = sparsity(masks, info.numLayers, info.experts.count, CLS_WINDOWS);
  const cls4: number | null = report.cls['4'];
  const saved: number = expertSavings(masks, info, 8).bytesSkipped;
  text += modelFileUrl(url, 'config.json') + String(cls4) + saved;
  const stream = await engine.chat.completions.create({ messages: [{ role: 'user', content: 'x' }], stream: true, max_tokens: 3 });
  for await (const ch of stream) text += ch.choices[0].delta.content ?? '';
  const done = await engine.chat.completions.create({ messages: [{ role: 'user', content: 'x' }] });
  text += done.choices[0].message.content + done.usage.total_tokens;
  const w = await createEngine({ worker: true });
  w.terminate();
  try {
    await engine.load(url);
  } catch (e) {
    if (e instanceof BlockffnError && e.code === 'OutOfMemory') text += e.message;
  }
  const ids: number[] = await engine.tokenize(text);
  text += await engine.detokenize(ids);
  const prompt: SegmentedPrompt = chatPrompt([{ role: 'user', content: text }], info.chatTemplate);
  for await (const c of engine.generate(prompt, { maxTokens: 1, stop: chatStops(info.chatTemplate) })) text += c.text;
  text += (await engine.tokenize(prompt, { addBos: false })).length + renderChat([{ role: 'user', content: 'x' }]);
  void (await hasModelInCache(url)); void init; void WasmEngine;
  await engine.unload();
  return text;
}
`,
  );
  writeFileSync(
    join(app, 'tsconfig.json'),
    JSON.stringify({
      compilerOptions: {
        strict: true,
        noEmit: true,
        module: 'nodenext',
        moduleResolution: 'nodenext',
        target: 'es2022',
        lib: ['es2022', 'esnext.disposable', 'dom', 'dom.iterable', 'dom.asynciterable'], // blockffn/wasm (wasm-bindgen) uses Symbol.dispose
        types: [],
        skipLibCheck: false,
      },
      files: ['consumer.ts'],
    }),
  );
  try {
    execFileSync(process.execPath, [tsc, '-p', app], { cwd: app, encoding: 'utf8' });
  } catch (e) {
    assert.fail(`tsc found type errors:\n${e.stdout}${e.stderr}`);
  }
});
