// Reliability of the worker transport in headless Chromium (system /usr/bin/chromium through
// playwright-core, served by scripts/serve.py with COOP/COEP), every call through createEngine({
// worker: ... }): hostile packages are refused with typed errors and leave wasm memory as it was;
// aborts (AbortController, AbortSignal.timeout) are prompt and the next generation is exact; a worker
// terminated from outside, or whose wasm instance traps, fails the pending call with a typed error
// within a bound and the next load() starts a new worker that generates the CLI's ids; a 10,000-token
// soak keeps wasm memory flat apart from the KV cache.
// The package served is BLOCKFFN_PKG_DIR (an installed tarball) or this working tree; the reference
// ids come from the native CLI (BLOCKFFN_BIN or target/release/blockffn).

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';

import { FIXTURE, ROOT, cliGenerate, cliGenerateModel, launchChromium, startServePy } from '../js/helpers.mjs';

const DEMO = join(ROOT, 'models/demo');
const PROMPT = [1, 5, 9, 200, 17];
const MiB = 1024 ** 2;
// The demo model's KV cache: per layer and token, the compressed latent (kv_lora_rank 128) and the
// RoPE key (qk_rope_head_dim 32) as f32; 10 layers; 1,024 positions (max_position_embeddings).
const DEMO_CFG = JSON.parse(readFileSync(join(DEMO, 'config.json'), 'utf8'));
const DEMO_KV_BYTES_PER_TOKEN = DEMO_CFG.num_hidden_layers * (DEMO_CFG.kv_lora_rank + DEMO_CFG.qk_rope_head_dim) * 4;
const DEMO_KV_FULL = DEMO_KV_BYTES_PER_TOKEN * DEMO_CFG.max_position_embeddings;

let dir;
let server;
let base;
let context;
let page;

// ---------------------------------------------------------------------------------------------
// Hostile packages, built from the fixture package into the served directory.

const sha256 = (b) => createHash('sha256').update(b).digest('hex');

/**
 * A copy of the package `src` under `dst`: `edit(files)` changes file bytes, the manifest is then
 * re-hashed to match (so integrity passes, as for anyone who can rewrite a package), and
 * `editManifest(manifest)` may change it afterwards.
 */
function hostilePackage(src, dst, edit, editManifest = () => {}) {
  mkdirSync(dst, { recursive: true });
  const files = {};
  for (const name of ['config.json', 'model.safetensors', 'tokenizer.json', 'manifest.json']) {
    files[name] = readFileSync(join(src, name));
  }
  edit(files);
  const manifest = JSON.parse(files['manifest.json']);
  for (const name of Object.keys(manifest.files)) {
    manifest.files[name] = { size: files[name].length, sha256: sha256(files[name]) };
  }
  editManifest(manifest);
  files['manifest.json'] = Buffer.from(JSON.stringify(manifest, null, 2));
  for (const name of ['config.json', 'model.safetensors', 'tokenizer.json', 'manifest.json']) {
    writeFileSync(join(dst, name), files[name]);
  }
}

/** config.json with `changes` applied; a bigint is written as the exact integer JSON allows. */
function editConfig(files, changes) {
  const c = JSON.parse(files['config.json']);
  const raw = {};
  for (const [k, v] of Object.entries(changes)) {
    if (typeof v === 'bigint') {
      c[k] = `__raw_${k}__`;
      raw[k] = String(v);
    } else {
      c[k] = v;
    }
  }
  let text = JSON.stringify(c, null, 2);
  for (const [k, v] of Object.entries(raw)) text = text.replace(`"__raw_${k}__"`, v);
  files['config.json'] = Buffer.from(text);
}

/** The runtime safetensors file with every tensor whose name passes `zero` emptied to shape [0, cols]. */
function emptyTensors(buf, zero) {
  const n = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8'));
  const data = buf.subarray(8 + n);
  const out = {};
  const parts = [];
  let off = 0;
  const names = Object.keys(header)
    .filter((k) => k !== '__metadata__')
    .sort((a, b) => header[a].data_offsets[0] - header[b].data_offsets[0]);
  if (header.__metadata__) out.__metadata__ = header.__metadata__;
  for (const k of names) {
    const t = header[k];
    if (zero(k)) {
      out[k] = { dtype: t.dtype, shape: [0, t.shape.at(-1)], data_offsets: [off, off] };
      continue;
    }
    const bytes = data.subarray(t.data_offsets[0], t.data_offsets[1]);
    out[k] = { ...t, data_offsets: [off, off + bytes.length] };
    parts.push(bytes);
    off += bytes.length;
  }
  let h = Buffer.from(JSON.stringify(out));
  // Keep the data 8-byte aligned, as the converter does (spaces are valid JSON padding).
  h = Buffer.concat([h, Buffer.alloc((8 - ((8 + h.length) % 8)) % 8, ' ')]);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(h.length));
  return Buffer.concat([len, h, ...parts]);
}

const HOSTILE = {
  // 1.9 GiB claimed for a 0.5 MB file: passes the 2 GiB / 4 GiB ceilings, so only a check of the
  // real size before allocating keeps wasm memory where it was.
  size: {
    expect: 'IntegrityMismatch',
    build: (dst) =>
      hostilePackage(
        FIXTURE,
        dst,
        () => {},
        (m) => {
          m.files['model.safetensors'].size = Math.floor(1.9 * 1024 ** 3);
        },
      ),
  },
  // 10^9 layers, manifest re-hashed so integrity passes: the tensor table alone would be ~10^10 entries.
  layers: {
    expect: 'InvalidConfig',
    build: (dst) => hostilePackage(FIXTURE, dst, (f) => editConfig(f, { num_hidden_layers: 1e9 })),
  },
  // 12 experts × 2^30 wraps to 0 in wasm32's usize: with the expert tensors emptied the shapes "match".
  expertsWrap: {
    expect: 'InvalidConfig',
    build: (dst) =>
      hostilePackage(FIXTURE, dst, (f) => {
        editConfig(f, { expert_size: 2 ** 30 });
        f['model.safetensors'] = emptyTensors(f['model.safetensors'], (k) => /mlp\.(up_proj|down_proj_t)$/.test(k));
      }),
  },
  // 2^32 + 64 truncates to 64 in wasm32: the same config the 64-bit CLI refuses.
  hiddenTruncates: {
    expect: 'InvalidConfig',
    build: (dst) => hostilePackage(FIXTURE, dst, (f) => editConfig(f, { hidden_size: 2n ** 32n + 64n })),
  },
};

// A test-only worker: the package's own worker entry, plus one message that exhausts its wasm
// memory from the inside (grow the memory to its maximum, then take the allocator's remaining free
// space with WeightBuffers, the package's fallible allocation), so the next allocation in Rust fails
// and aborts: a real `unreachable` trap in the middle of whatever the engine does next.
const TRAP_WORKER = `
import '/blockffn/js/worker.js';
import initWasm, { WeightBuffer } from '/blockffn/pkg/blockffn.js';
const held = [];
self.addEventListener('message', async (ev) => {
  if (!ev.data || ev.data.test !== 'exhaust') return;
  const { memory } = await initWasm(); // the instance the engine already runs
  const before = memory.buffer.byteLength;
  for (let pages = 65536; pages >= 1; pages >>= 1) {
    try { while (true) memory.grow(pages); } catch {}
  }
  let taken = 0;
  for (let n = 1 << 30; n >= 4096; ) {
    try { held.push(new WeightBuffer(n)); taken += n; } catch { n >>= 1; }
  }
  self.postMessage({ test: 'exhausted', before, after: memory.buffer.byteLength, taken });
});
`;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'blockffn-reliability-'));
  const site = join(dir, 'site');
  mkdirSync(join(site, 'hostile'), { recursive: true });
  symlinkSync(process.env.BLOCKFFN_PKG_DIR || ROOT, join(site, 'blockffn'));
  symlinkSync(FIXTURE, join(site, 'model'));
  symlinkSync(DEMO, join(site, 'demo'));
  for (const [name, h] of Object.entries(HOSTILE)) h.build(join(site, 'hostile', name));
  writeFileSync(join(site, 'trap-worker.js'), TRAP_WORKER);
  writeFileSync(join(site, 'index.html'), '<!doctype html><meta charset="utf-8"><title>blockffn reliability</title><p>test page</p>');
  ({ server, base } = await startServePy(site));
  context = await launchChromium(join(dir, 'profile'));
  page = context.pages()[0] || (await context.newPage());
  page.on('pageerror', (e) => console.error('page error:', e));
  await page.goto(base);
  // In-page helpers every test uses.
  await page.evaluate(() => {
    window.bounded = (promise, ms, what) =>
      Promise.race([
        promise,
        new Promise((_, reject) => setTimeout(() => reject(new Error(`TIMEOUT: ${what} did not settle in ${ms} ms`)), ms)),
      ]);
    window.describe = (e) => ({
      blockffn: e && e.name === 'BlockffnError',
      code: e && e.code,
      message: String(e && e.message),
    });
    window.idsOf = async (engine, prompt, options) => {
      const ids = [];
      for await (const c of engine.generate(prompt, options)) ids.push(...c.tokenIds);
      return ids;
    };
  });
});

after(async () => {
  if (context) await context.close();
  if (server) server.kill();
  rmSync(dir, { recursive: true, force: true });
});

test('hostile packages: typed errors, wasm memory unchanged, the engine still exact', { timeout: 240_000 }, async (t) => {
  const r = await page.evaluate(async ({ prompt, names }) => {
    const { createEngine } = await import('/blockffn/js/index.js');
    const engine = await createEngine({ worker: true });
    const mem = async () => (await engine.runtimeInfo()).wasmMemoryBytes;
    const attempt = async (url) => {
      const t0 = performance.now();
      let out;
      try {
        const info = await bounded(engine.load(url), 60_000, `load(${url})`);
        out = { loaded: true, numLayers: info.numLayers, hiddenSize: info.hiddenSize };
      } catch (e) {
        out = describe(e);
      }
      out.ms = performance.now() - t0;
      out.mem = await mem().catch((e) => `runtimeInfo failed: ${e.message}`);
      out.restarts = engine.restarts;
      return out;
    };
    // A fresh worker: nothing loaded yet, so any allocation of the claimed size would show.
    const fresh = await mem();
    const freshSize = await attempt('/hostile/size/');
    // With a model loaded once (its memory is then free for the next load to reuse).
    await engine.load('/model/');
    const loaded = await mem();
    const results = {};
    for (const name of names) results[name] = await attempt(`/hostile/${name}/`);
    await engine.load('/model/');
    const ids = await idsOf(engine, prompt, { maxTokens: 40 });
    const end = await mem();
    engine.terminate();
    return { fresh, freshSize, loaded, results, ids, end };
  }, { prompt: PROMPT, names: Object.keys(HOSTILE) });

  const mib = (b) => (typeof b === 'number' ? `${(b / MiB).toFixed(2)} MiB` : b);
  t.diagnostic(`fresh worker: ${mib(r.fresh)} before, ${mib(r.freshSize.mem)} after the 1.9 GiB size claim (${r.freshSize.code}, ${r.freshSize.ms.toFixed(0)} ms)`);
  t.diagnostic(`model loaded: ${mib(r.loaded)}`);
  for (const [name, res] of Object.entries(r.results)) {
    t.diagnostic(`${name}: ${res.loaded ? `LOADED (layers ${res.numLayers}, hidden ${res.hiddenSize})` : `${res.code}`} in ${res.ms.toFixed(0)} ms, wasm memory after ${mib(res.mem)}, restarts ${res.restarts}${res.loaded ? '' : ` — ${res.message.slice(0, 200)}`}`);
  }
  t.diagnostic(`after reloading the fixture and generating: ${mib(r.end)}`);

  for (const [name, res] of Object.entries(r.results)) {
    assert.equal(res.blockffn, true, `${name}: ${JSON.stringify(res)}`);
    assert.equal(res.code, HOSTILE[name].expect, `${name}: ${res.message}`);
    assert.equal(res.restarts, 0, `${name}: the worker did not have to be replaced`);
    assert.equal(res.mem, r.loaded, `${name}: wasm memory unchanged (${mib(res.mem)} vs ${mib(r.loaded)})`);
  }
  assert.deepEqual(r.ids, cliGenerate(['--ids', PROMPT.join(','), '--max-new-tokens', '40']).ids);
  assert.equal(r.end, r.loaded, 'reloading and generating reuses the same memory');
  assert.equal(r.freshSize.blockffn, true, JSON.stringify(r.freshSize));
  assert.equal(r.freshSize.code, HOSTILE.size.expect, r.freshSize.message);
  assert.equal(r.freshSize.mem, r.fresh, 'a fresh worker\'s wasm memory is unchanged by the size claim');
});

test('abort: AbortController and AbortSignal.timeout give Aborted promptly; the next generation is exact', { timeout: 180_000 }, async (t) => {
  const longPrompt = cliGenerateModel(DEMO, ['--ids', PROMPT.join(','), '--max-new-tokens', '700', '--ignore-eos']).ids;
  const r = await page.evaluate(async ({ prompt, longPrompt }) => {
    const { createEngine } = await import('/blockffn/js/index.js');
    const out = {};
    const engine = await createEngine({ worker: true });
    await engine.load('/model/');
    const abortAfter = async (model, options, n, how) => {
      let got = 0;
      let err = null;
      let t = 0;
      const t0 = performance.now();
      try {
        await bounded(
          (async () => {
            const { prompt: p, ...rest } = options;
            for await (const c of model.generate(p, rest)) {
              got += c.tokenIds.length;
              if (how && got === n) {
                t = performance.now();
                how();
              }
            }
          })(),
          30_000,
          'the aborted generation',
        );
      } catch (e) {
        err = describe(e);
      }
      const end = performance.now();
      return { got, err, afterAbortMs: t ? end - t : null, ms: end - t0 };
    };

    // AbortController after 5 tokens, then 20 more at varying points; memory flat across them.
    const ctrl = new AbortController();
    out.controller = await abortAfter(engine, { prompt, maxTokens: 200, ignoreEos: true, signal: ctrl.signal }, 5, () => ctrl.abort());
    out.memAfterFirst = (await engine.runtimeInfo()).wasmMemoryBytes;
    out.many = [];
    for (let i = 0; i < 20; i++) {
      const c = new AbortController();
      const r = await abortAfter(engine, { prompt, maxTokens: 250, ignoreEos: true, signal: c.signal }, 1 + ((i * 37) % 200), () => c.abort());
      out.many.push({ got: r.got, code: r.err && r.err.code });
    }
    out.memAfterMany = (await engine.runtimeInfo()).wasmMemoryBytes;
    out.after = await idsOf(engine, prompt, { maxTokens: 40 });

    // AbortSignal.timeout on the demo model (1,024 positions: long enough to still be running).
    const demo = await createEngine({ worker: true });
    await demo.load('/demo/');
    out.timeout = await abortAfter(demo, { prompt, maxTokens: 1000, ignoreEos: true, signal: AbortSignal.timeout(400) }, 0, null);
    // A timeout that fires inside a 705-token prefill: no token at all.
    out.prefill = await abortAfter(demo, { prompt: longPrompt, maxTokens: 100, signal: AbortSignal.timeout(30) }, 0, null);
    // Already aborted: rejected before anything is sent.
    out.pre = await abortAfter(demo, { prompt, maxTokens: 10, signal: AbortSignal.abort() }, 0, null);
    out.demoAfter = await idsOf(demo, prompt, { maxTokens: 40 });
    out.demoLongAfter = await idsOf(demo, longPrompt, { maxTokens: 20 });
    engine.terminate();
    demo.terminate();
    return out;
  }, { prompt: PROMPT, longPrompt: [...PROMPT, ...longPrompt] });

  t.diagnostic(
    `controller: Aborted after ${r.controller.got} tokens, ${r.controller.afterAbortMs.toFixed(1)} ms after abort(); ` +
      `timeout(400): ${r.timeout.got} tokens, settled at ${r.timeout.ms.toFixed(0)} ms; prefill timeout(30): ` +
      `${r.prefill.got} tokens, settled at ${r.prefill.ms.toFixed(0)} ms; wasm memory ${(r.memAfterFirst / MiB).toFixed(2)} → ` +
      `${(r.memAfterMany / MiB).toFixed(2)} MiB over 20 more aborts`,
  );
  assert.equal(r.controller.err.code, 'Aborted', JSON.stringify(r.controller.err));
  assert.equal(r.controller.err.blockffn, true);
  assert.equal(r.controller.got, 5, 'no token after the abort');
  assert.ok(r.controller.afterAbortMs < 250, `settled ${r.controller.afterAbortMs} ms after abort()`);
  for (const [i, m] of r.many.entries()) {
    assert.equal(m.code, 'Aborted', `abort #${i}`);
    assert.equal(m.got, 1 + ((i * 37) % 200), `abort #${i}: no token after the abort`);
  }
  assert.equal(r.memAfterMany, r.memAfterFirst, 'aborted generations free their KV caches');

  assert.equal(r.timeout.err.code, 'Aborted', JSON.stringify(r.timeout.err));
  assert.match(r.timeout.err.message, /timed out|timeout/i, 'the message says it was the timeout');
  assert.ok(r.timeout.got > 0 && r.timeout.got < 1000, `${r.timeout.got} tokens before the timeout`);
  assert.ok(r.timeout.ms >= 390 && r.timeout.ms < 400 + 300, `settled at ${r.timeout.ms} ms for a 400 ms timeout`);
  assert.equal(r.prefill.err.code, 'Aborted', JSON.stringify(r.prefill.err));
  assert.equal(r.prefill.got, 0);
  assert.equal(r.pre.err.code, 'Aborted');
  assert.equal(r.pre.got, 0);

  assert.deepEqual(r.after, cliGenerate(['--ids', PROMPT.join(','), '--max-new-tokens', '40']).ids);
  assert.deepEqual(r.demoAfter, cliGenerateModel(DEMO, ['--ids', PROMPT.join(','), '--max-new-tokens', '40']).ids);
  const longIds = [...PROMPT, ...longPrompt];
  assert.deepEqual(r.demoLongAfter, cliGenerateModel(DEMO, ['--ids', longIds.join(','), '--max-new-tokens', '20']).ids);
});

test('worker crash: terminate() from outside and a wasm trap inside reject typed, bounded; load() starts a new worker', { timeout: 240_000 }, async (t) => {
  const r = await page.evaluate(async (prompt) => {
    const { createEngine } = await import('/blockffn/js/index.js');
    const out = {};
    const BOUND = 5_000;
    // Iterate `gen` until `hit(tokens)` has run once and the generation settles (bounded).
    const runUntil = async (gen, n, hit) => {
      let got = 0;
      let t = 0;
      let err = null;
      try {
        await bounded(
          (async () => {
            for await (const c of gen) {
              got += c.tokenIds.length;
              if (got === n) {
                await hit();
                t = performance.now();
              }
            }
          })(),
          n > 0 ? 60_000 : BOUND,
          'the generation',
        );
      } catch (e) {
        err = describe(e);
      }
      return { got, err, ms: t ? performance.now() - t : null };
    };

    // 1. worker: true, terminated from outside (engine.worker is the Worker the engine uses).
    const engine = await createEngine({ worker: true });
    await engine.load('/model/');
    const first = engine.worker;
    out.terminated = await runUntil(engine.generate(prompt, { maxTokens: 200, ignoreEos: true }), 5, () => first.terminate());
    out.afterDeath = [];
    for (const call of [() => engine.modelInfo(), () => engine.runtimeInfo(), () => idsOf(engine, prompt, { maxTokens: 3 })]) {
      try {
        await bounded(call(), BOUND, 'a call on the dead worker');
        out.afterDeath.push({ ok: true });
      } catch (e) {
        out.afterDeath.push(describe(e));
      }
    }
    out.reload = await engine.load('/model/').then((i) => i.numLayers, (e) => describe(e));
    out.restarts = engine.restarts;
    out.newWorker = engine.worker !== first;
    out.idsAfterRestart = await idsOf(engine, prompt, { maxTokens: 40 });

    // 2. terminated in the middle of a load (the demo's 23 MB): the load rejects, the next one works.
    const demoEngine = await createEngine({ worker: true });
    let killAt = null;
    const loading = demoEngine.load('/demo/', {
      cache: false,
      onProgress: (e) => {
        if (killAt === null && e.phase === 'download' && e.loaded > 4 * 1024 * 1024) {
          killAt = performance.now();
          demoEngine.worker.terminate();
        }
      },
    });
    try {
      await bounded(loading, 60_000, 'the interrupted load');
      out.loadKill = { ok: true };
    } catch (e) {
      out.loadKill = { ...describe(e), ms: killAt ? performance.now() - killAt : null };
    }
    out.demoReload = await demoEngine.load('/demo/').then((i) => i.numLayers, (e) => describe(e));
    out.demoIds = await idsOf(demoEngine, prompt, { maxTokens: 40 });
    demoEngine.terminate();

    // 3. A Worker object the page made and the engine cannot replace.
    const own = new Worker('/blockffn/js/worker.js', { type: 'module' });
    const given = await createEngine({ worker: own });
    await given.load('/model/');
    out.given = await runUntil(given.generate(prompt, { maxTokens: 200, ignoreEos: true }), 5, () => own.terminate());
    out.givenLoad = await bounded(given.load('/model/'), BOUND, 'load() on a given, dead worker').then(() => ({ ok: true }), (e) => describe(e));

    // 4. A trap inside the wasm instance during generation (test worker: memory exhausted from inside).
    let current = null;
    const spawned = [];
    const trapEngine = await createEngine({
      worker: () => {
        current = new Worker('/trap-worker.js', { type: 'module' });
        spawned.push(current);
        return current;
      },
    });
    await trapEngine.load('/demo/');
    const exhaust = (w) =>
      new Promise((resolve) => {
        const on = (ev) => {
          if (ev.data && ev.data.test === 'exhausted') {
            w.removeEventListener('message', on);
            resolve(ev.data);
          }
        };
        w.addEventListener('message', on);
        w.postMessage({ test: 'exhaust' });
      });
    out.trap = await runUntil(trapEngine.generate(prompt, { maxTokens: 1000, ignoreEos: true }), 5, async () => {
      out.exhausted = await exhaust(current);
    });
    out.trapAfter = await bounded(trapEngine.runtimeInfo(), BOUND, 'runtimeInfo after the trap').then(() => ({ ok: true }), (e) => describe(e));
    out.trapReload = await trapEngine.load('/demo/').then((i) => i.numLayers, (e) => describe(e));
    out.trapRestarts = trapEngine.restarts;
    out.trapSpawned = spawned.length;
    out.trapMemAfter = (await trapEngine.runtimeInfo()).wasmMemoryBytes;
    out.trapIds = await idsOf(trapEngine, prompt, { maxTokens: 40 });
    trapEngine.terminate();
    engine.terminate();
    return out;
  }, PROMPT);

  const fixtureRef = cliGenerate(['--ids', PROMPT.join(','), '--max-new-tokens', '40']).ids;
  const demoRef = cliGenerateModel(DEMO, ['--ids', PROMPT.join(','), '--max-new-tokens', '40']).ids;
  t.diagnostic(
    `terminate(): rejected ${r.terminated.ms?.toFixed(1)} ms later after ${r.terminated.got} tokens (${r.terminated.err?.code}: ${r.terminated.err?.message})`,
  );
  t.diagnostic(`terminate() mid-load: ${r.loadKill.code} ${r.loadKill.ms?.toFixed(1)} ms later`);
  t.diagnostic(
    `trap: memory ${(r.exhausted?.before / MiB).toFixed(1)} → ${(r.exhausted?.after / MiB).toFixed(0)} MiB, ${(r.exhausted?.taken / MiB).toFixed(1)} MiB of free heap taken; ` +
      `rejected ${r.trap.ms?.toFixed(1)} ms after (${r.trap.err?.code}: ${r.trap.err?.message}); new worker's memory ${(r.trapMemAfter / MiB).toFixed(1)} MiB`,
  );

  // 1. outside terminate()
  assert.equal(r.terminated.got, 5, 'no token after the terminate');
  assert.equal(r.terminated.err.blockffn, true, JSON.stringify(r.terminated.err));
  assert.equal(r.terminated.err.code, 'Internal');
  assert.match(r.terminated.err.message, /worker stopped.*load\(\)/s);
  assert.ok(r.terminated.ms < 2000, `rejected ${r.terminated.ms} ms after terminate()`);
  for (const d of r.afterDeath) {
    assert.equal(d.code, 'Internal', JSON.stringify(d));
    assert.match(d.message, /worker stopped.*load\(\)/s);
  }
  assert.equal(r.reload, 3, 'load() after the crash loads the fixture (3 layers)');
  assert.equal(r.restarts, 1);
  assert.equal(r.newWorker, true);
  assert.deepEqual(r.idsAfterRestart, fixtureRef);

  // 2. terminate() mid-load
  assert.equal(r.loadKill.code, 'Internal', JSON.stringify(r.loadKill));
  assert.match(r.loadKill.message, /worker stopped/);
  assert.ok(r.loadKill.ms < 2000, `load rejected ${r.loadKill.ms} ms after terminate()`);
  assert.equal(r.demoReload, DEMO_CFG.num_hidden_layers);
  assert.deepEqual(r.demoIds, demoRef);

  // 3. a given worker
  assert.equal(r.given.err.code, 'Internal', JSON.stringify(r.given.err));
  assert.ok(r.given.ms < 2000);
  assert.equal(r.givenLoad.code, 'Internal', JSON.stringify(r.givenLoad));
  assert.match(r.givenLoad.message, /create a new engine/);

  // 4. trap
  assert.ok(r.exhausted && r.exhausted.after > r.exhausted.before, 'the test worker grew the wasm memory');
  assert.ok(r.trap.got >= 5 && r.trap.got < 1000, `${r.trap.got} tokens before the trap`);
  assert.equal(r.trap.err.blockffn, true, JSON.stringify(r.trap.err));
  assert.equal(r.trap.err.code, 'Internal');
  assert.match(r.trap.err.message, /worker stopped/);
  assert.match(r.trap.err.message, /load\(\)/);
  assert.ok(r.trap.ms < 2000, `rejected ${r.trap.ms} ms after the memory was exhausted`);
  assert.equal(r.trapAfter.code, 'Internal', JSON.stringify(r.trapAfter));
  assert.equal(r.trapReload, DEMO_CFG.num_hidden_layers);
  assert.equal(r.trapRestarts, 1);
  assert.equal(r.trapSpawned, 2, 'the worker function made the replacement');
  assert.ok(r.trapMemAfter < 256 * MiB, `the new worker starts with fresh memory (${r.trapMemAfter})`);
  assert.deepEqual(r.trapIds, demoRef);
});

test('soak: 10,000 tokens in 10 generations; wasm memory flat apart from the KV cache', { timeout: 600_000 }, async (t) => {
  const GENS = 10;
  const PER_GEN = 1000; // 5 prompt + 1,000 generated = 1,005 of the demo's 1,024 positions
  const r = await page.evaluate(async ({ prompt, gens, perGen }) => {
    const { createEngine } = await import('/blockffn/js/index.js');
    const engine = await createEngine({ worker: true });
    await engine.load('/demo/');
    const mem = async () => (await engine.runtimeInfo()).wasmMemoryBytes;
    const afterLoad = await mem();
    const samples = []; // { gen, tokens (total so far), bytes }
    const runs = [];
    let total = 0;
    const t0 = performance.now();
    for (let g = 0; g < gens; g++) {
      const ids = [];
      let finish = null;
      let tps = 0;
      for await (const c of engine.generate(prompt, { maxTokens: perGen, ignoreEos: true })) {
        ids.push(...c.tokenIds);
        total += c.tokenIds.length;
        if (c.finishReason) {
          finish = c.finishReason;
          tps = c.stats.tokensPerSecond;
        }
        if (total % 500 === 0 && c.tokenIds.length) samples.push({ gen: g, tokens: total, bytes: await mem() });
      }
      runs.push({ ids, finish, tps, end: await mem() });
    }
    const ms = performance.now() - t0;
    engine.terminate();
    return { afterLoad, samples, runs, ms, total };
  }, { prompt: PROMPT, gens: GENS, perGen: PER_GEN });

  const mib = (b) => (b / MiB).toFixed(2);
  const all = [r.afterLoad, ...r.samples.map((s) => s.bytes), ...r.runs.map((x) => x.end)];
  const peak = Math.max(...all);
  const final = r.runs.at(-1).end;
  const firstEnd = r.runs[0].end;
  t.diagnostic(
    `${r.total} tokens in ${(r.ms / 1000).toFixed(1)} s (${((r.total * 1000) / r.ms).toFixed(1)} tok/s overall; per generation ` +
      `${r.runs.map((x) => x.tps.toFixed(0)).join(', ')} tok/s)`,
  );
  t.diagnostic(
    `wasm memory: after load ${mib(r.afterLoad)} MiB, peak ${mib(peak)} MiB, final ${mib(final)} MiB; samples ` +
      r.samples.map((s) => `${s.tokens}:${mib(s.bytes)}`).join(' '),
  );
  t.diagnostic(`KV cache of the full context: ${mib(DEMO_KV_FULL)} MiB (${DEMO_KV_BYTES_PER_TOKEN} B per token)`);

  assert.equal(r.total, GENS * PER_GEN);
  assert.equal(r.samples.length, (GENS * PER_GEN) / 500, 'one sample every 500 tokens');
  for (const run of r.runs) {
    assert.equal(run.ids.length, PER_GEN);
    assert.equal(run.finish, 'length');
    assert.deepEqual(run.ids, r.runs[0].ids, 'every generation of the same greedy prompt is identical');
  }
  // The bound. Generation 1 may grow wasm memory by one KV cache of the full context and a half
  // (its Vecs double, so the old and the new buffer coexist while the last one is copied) plus
  // 1 MiB of per-generation buffers. Generation 2 may add at most one more KV cache (the freed
  // cache is reused, but not necessarily in place). From then on nothing grows: every sample of
  // generations 3-10 and every generation's end equal generation 2's end. Wasm memory never
  // shrinks, so final = peak = that plateau.
  const plateau = r.runs[1].end;
  assert.ok(firstEnd - r.afterLoad <= 1.5 * DEMO_KV_FULL + MiB, `generation 1 grew ${mib(firstEnd - r.afterLoad)} MiB`);
  assert.ok(plateau - firstEnd <= DEMO_KV_FULL, `generation 2 grew ${mib(plateau - firstEnd)} MiB`);
  for (const s of r.samples.filter((x) => x.gen >= 2)) {
    assert.equal(s.bytes, plateau, `sample at ${s.tokens} tokens: ${mib(s.bytes)} MiB, plateau ${mib(plateau)} MiB`);
  }
  for (const [g, run] of r.runs.entries()) {
    if (g >= 1) assert.equal(run.end, plateau, `generation ${g + 1} ends at ${mib(run.end)} MiB, plateau ${mib(plateau)} MiB`);
  }
  assert.equal(peak, plateau);
  assert.equal(final, peak);
  // The reference: the native CLI's greedy continuation, all 1,000 ids.
  const ref = cliGenerateModel(DEMO, ['--ids', PROMPT.join(','), '--max-new-tokens', String(PER_GEN), '--ignore-eos']).ids;
  assert.deepEqual(r.runs[0].ids, ref);
});
