// Headless Chromium (system /usr/bin/chromium through playwright-core) over scripts/serve.py
// (COOP/COEP): the worker transport streams tokens while the main thread keeps ticking, load
// progress arrives in order, the second load is a Cache API hit, aborts are prompt, and the
// in-thread transport answers the same calls identically.
// The package served is BLOCKFFN_PKG_DIR (an installed tarball) or this working tree.

import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';

import { FIXTURE, ROOT, cliGenerate, launchChromium, startServePy } from '../js/helpers.mjs';

const PROMPT = [1, 5, 9, 200, 17];
let dir;
let server;
let base;
let logFile;
let context;
let page;

function requestsSoFar() {
  try {
    return readFileSync(logFile, 'utf8').trim().split('\n').filter(Boolean);
  } catch {
    return [];
  }
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'blockffn-browser-'));
  const site = join(dir, 'site');
  logFile = join(dir, 'requests.log');
  mkdirSync(site, { recursive: true });
  symlinkSync(process.env.BLOCKFFN_PKG_DIR || ROOT, join(site, 'blockffn'));
  symlinkSync(FIXTURE, join(site, 'model'));
  writeFileSync(join(site, 'index.html'), '<!doctype html><meta charset="utf-8"><title>blockffn test</title><p>test page</p>');
  ({ server, base } = await startServePy(site, ['--log', logFile]));
  context = await launchChromium(join(dir, 'profile'));
  page = context.pages()[0] || (await context.newPage());
  page.on('pageerror', (e) => console.error('page error:', e));
  await page.goto(base);
});

after(async () => {
  if (context) await context.close();
  if (server) server.kill();
  rmSync(dir, { recursive: true, force: true });
});

test('worker: progress in order, tokens stream while the main thread keeps ticking, ids equal the CLI', async (t) => {
  const r = await page.evaluate(async (prompt) => {
    const { createEngine, deleteModelFromCache, hasModelInCache } = await import('/blockffn/js/index.js');
    await deleteModelFromCache('/model/');
    const engine = await createEngine({ worker: true });
    const events = [];
    const info = await engine.load('/model/', { onProgress: (e) => events.push(e) });
    const ticks = [];
    const iv = setInterval(() => ticks.push(performance.now()), 5);
    const runs = [];
    const t0 = performance.now();
    // Generate for at least 800 ms so the timer has room to show any blocking.
    while (performance.now() - t0 < 800 || runs.length < 2) {
      const times = [];
      const ids = [];
      for await (const c of engine.generate(prompt, { maxTokens: 120 })) {
        times.push(performance.now());
        ids.push(...c.tokenIds);
      }
      runs.push({ times, ids });
    }
    clearInterval(iv);
    return {
      events,
      info,
      ticks,
      runs,
      cached: await hasModelInCache('/model/'),
      coi: self.crossOriginIsolated,
      runtime: await engine.runtimeInfo(),
    };
  }, PROMPT);

  // progress
  const order = ['download', 'verify', 'parse', 'ready'];
  assert.deepEqual([...new Set(r.events.map((e) => e.phase))], order);
  const idx = r.events.map((e) => order.indexOf(e.phase));
  assert.ok(idx.every((p, i) => i === 0 || p >= idx[i - 1]), 'phases in order');
  const dl = r.events.filter((e) => e.phase === 'download');
  assert.ok(dl.every((e, i) => i === 0 || e.loaded >= dl[i - 1].loaded));
  assert.equal(dl.at(-1).loaded, dl.at(-1).total);
  assert.ok(dl.every((e) => e.fromCache === false), 'first load comes from the network');
  assert.equal(r.info.fromCache, false);
  assert.equal(r.info.cached, true);
  assert.equal(r.cached, true, 'stored in the Cache API');
  assert.equal(r.coi, true, 'served cross-origin isolated');
  assert.equal(r.runtime.backend, 'wasm-relaxed-simd', 'Chromium has relaxed SIMD: the fused-multiply-add build runs');

  // ids
  const cli = cliGenerate(['--ids', PROMPT.join(','), '--max-new-tokens', '120']);
  for (const run of r.runs) assert.deepEqual(run.ids, cli.ids);

  // streaming + responsiveness: chunks of one run arrive spread out with timer ticks between them,
  // and the main thread never stalls.
  const first = r.runs[0].times[0];
  const last = r.runs.at(-1).times.at(-1);
  const during = r.ticks.filter((t) => t >= first && t <= last);
  let worst = 0;
  for (let i = 1; i < during.length; i++) worst = Math.max(worst, during[i] - during[i - 1]);
  assert.ok(last - first >= 700, `generation ran ${last - first} ms`);
  assert.ok(during.length >= (last - first) / 5 / 4, `${during.length} ticks in ${last - first} ms`);
  assert.ok(worst < 250, `the main thread stalled for ${worst} ms`);
  const interleaved = r.runs.filter((run) => r.ticks.some((t) => t > run.times[0] && t < run.times.at(-1)));
  assert.ok(interleaved.length >= 1, 'timer ticks arrive between the chunks of a run');
  const tokens = r.runs.reduce((a, run) => a + run.ids.length, 0);
  t.diagnostic(
    `${r.runs.length} runs, ${tokens} tokens in ${Math.round(last - first)} ms; ${during.length} ticks, ` +
      `longest main-thread gap ${worst.toFixed(1)} ms; ${r.events.length} progress events`,
  );
});

test('second load is a cache hit (no model bytes fetched), in a fresh page and worker', async () => {
  await page.reload();
  const before = requestsSoFar().length;
  const r = await page.evaluate(async (prompt) => {
    const { createEngine, hasModelInCache } = await import('/blockffn/js/index.js');
    const had = await hasModelInCache('/model/');
    const engine = await createEngine({ worker: true });
    const events = [];
    const info = await engine.load('/model/', { onProgress: (e) => events.push(e) });
    const ids = [];
    for await (const c of engine.generate(prompt, { maxTokens: 20 })) ids.push(...c.tokenIds);
    engine.terminate();
    return { had, events, info, ids };
  }, PROMPT);
  const fetched = requestsSoFar().slice(before).filter((l) => l.includes('/model/'));
  assert.equal(r.had, true);
  assert.deepEqual(fetched, [], 'nothing under /model/ was requested');
  assert.equal(r.info.fromCache, true);
  assert.ok(r.events.filter((e) => e.phase === 'download').every((e) => e.fromCache));
  assert.deepEqual([...new Set(r.events.map((e) => e.phase))], ['download', 'verify', 'parse', 'ready']);
  assert.deepEqual(r.ids, cliGenerate(['--ids', PROMPT.join(','), '--max-new-tokens', '20']).ids);
});

test('worker: abort mid-stream is prompt and the next request works; chat streams; errors are typed', async () => {
  const r = await page.evaluate(async (prompt) => {
    const { createEngine, BlockffnError } = await import('/blockffn/js/index.js');
    const engine = await createEngine({ worker: true });
    await engine.load('/model/');
    const ctrl = new AbortController();
    let n = 0;
    let code = null;
    let ms = 0;
    try {
      let t = 0;
      try {
        for await (const c of engine.generate(prompt, { maxTokens: 200, signal: ctrl.signal })) {
          n += c.tokenIds.length;
          if (n === 3) {
            t = performance.now();
            ctrl.abort();
          }
        }
      } finally {
        ms = performance.now() - t;
      }
    } catch (e) {
      code = e instanceof BlockffnError ? e.code : String(e);
    }
    const after = [];
    for await (const c of engine.generate(prompt, { maxTokens: 10 })) after.push(...c.tokenIds);
    const stream = await engine.chat.completions.create({
      messages: [{ role: 'user', content: 'Name a river.' }],
      stream: true,
      max_tokens: 8,
      seed: 1,
    });
    let usage = null;
    let chunks = 0;
    for await (const ch of stream) {
      chunks++;
      if (ch.usage) usage = ch.usage;
    }
    let notFound = null;
    try {
      await engine.load('/no-such-model/');
    } catch (e) {
      notFound = e instanceof BlockffnError ? e.code : String(e);
    }
    let badInput = null;
    try {
      for await (const c of engine.generate([1, 99999])) void c;
    } catch (e) {
      badInput = e.code;
    }
    // picked files travel to the worker
    const files = [];
    for (const name of ['manifest.json', 'config.json', 'model.safetensors', 'tokenizer.json']) {
      files.push(new File([await (await fetch('/model/' + name)).arrayBuffer()], name));
    }
    const info = await engine.load(files);
    const again = [];
    for await (const c of engine.generate(prompt, { maxTokens: 10 })) again.push(...c.tokenIds);
    engine.terminate();
    return { n, code, ms, after, chunks, usage, notFound, badInput, again, id: info.id };
  }, PROMPT);
  assert.equal(r.code, 'Aborted');
  assert.equal(r.n, 3, 'no token after the abort');
  assert.ok(r.ms < 250, `ended ${r.ms} ms after the abort`);
  const cli = cliGenerate(['--ids', PROMPT.join(','), '--max-new-tokens', '10']);
  assert.deepEqual(r.after, cli.ids);
  assert.equal(r.usage.completion_tokens, 8);
  assert.ok(r.chunks >= 9);
  assert.equal(r.notFound, 'ModelNotFound');
  assert.equal(r.badInput, 'InvalidInput');
  assert.deepEqual(r.again, cli.ids);
  assert.match(r.id, /^files:/);
});

test('in-thread transport: the same calls give the same results; a full storage quota falls back to memory', async () => {
  const r = await page.evaluate(async (prompt) => {
    const { createEngine, deleteModelFromCache, hasModelInCache } = await import('/blockffn/js/index.js');
    const engine = await createEngine({ worker: false });
    await engine.load('/model/');
    const ids = [];
    for await (const c of engine.generate(prompt, { maxTokens: 30, temperature: 0.8, topP: 0.9, seed: 4 })) ids.push(...c.tokenIds);
    // Quota: every cache write fails as a full disk would.
    await deleteModelFromCache('/model/');
    const put = Cache.prototype.put;
    Cache.prototype.put = () => Promise.reject(new DOMException('quota', 'QuotaExceededError'));
    let info;
    try {
      info = await engine.load('/model/');
    } finally {
      Cache.prototype.put = put;
    }
    const after = [];
    for await (const c of engine.generate(prompt, { maxTokens: 10 })) after.push(...c.tokenIds);
    return { ids, info, cached: await hasModelInCache('/model/'), after };
  }, PROMPT);
  const cli = cliGenerate(['--ids', PROMPT.join(','), '--max-new-tokens', '30', '--temperature', '0.8', '--top-p', '0.9', '--seed', '4']);
  assert.deepEqual(r.ids, cli.ids);
  assert.equal(r.info.cached, false);
  assert.equal(r.cached, false);
  assert.match(r.info.warnings.join(' '), /quota/);
  assert.deepEqual(r.after, cliGenerate(['--ids', PROMPT.join(','), '--max-new-tokens', '10']).ids);
});

test("simd: 'baseline' runs the SIMD128 build in a worker; it and the relaxed-SIMD build give the CLI ids", async () => {
  const r = await page.evaluate(async (prompt) => {
    const { createEngine, relaxedSimdSupported } = await import('/blockffn/js/index.js');
    const out = { relaxed: relaxedSimdSupported() };
    for (const simd of ['auto', 'baseline']) {
      const engine = await createEngine({ worker: true, simd });
      await engine.load('/model/');
      const ids = [];
      for await (const c of engine.generate(prompt, { maxTokens: 120 })) ids.push(...c.tokenIds);
      out[simd] = { ids, backend: (await engine.runtimeInfo()).backend, info: (await engine.modelInfo()).backend };
      engine.terminate();
    }
    return out;
  }, PROMPT);
  assert.equal(r.relaxed, true);
  assert.equal(r.auto.backend, 'wasm-relaxed-simd');
  assert.equal(r.auto.info, 'wasm-relaxed-simd');
  assert.equal(r.baseline.backend, 'wasm-simd128');
  assert.equal(r.baseline.info, 'wasm-simd128');
  const cli = cliGenerate(['--ids', PROMPT.join(','), '--max-new-tokens', '120']);
  assert.deepEqual(r.auto.ids, cli.ids);
  assert.deepEqual(r.baseline.ids, cli.ids);
  const wasmFetched = requestsSoFar().filter((l) => /_bg\.wasm/.test(l));
  assert.ok(wasmFetched.some((l) => l.includes('blockffn_relaxed_bg.wasm')), 'the relaxed build was fetched');
  assert.ok(wasmFetched.some((l) => l.includes('blockffn_bg.wasm')), 'the baseline build was fetched');
});
