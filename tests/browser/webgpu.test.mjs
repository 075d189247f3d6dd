// The WebGPU backend of the npm package in headless Chromium with --enable-unsafe-webgpu (Dawn on
// SwiftShader: real WebGPU, no GPU needed), over scripts/serve.py: every golden fixture's logits
// against the PyTorch reference and the wasm backend, the demo model's greedy text and expert
// telemetry equal to the wasm backend's and the native CLI's (in-thread and in the worker), dense =
// sparse, abort; 'auto' passing over the software adapter, and — in a Chromium without WebGPU —
// 'auto' falling back to wasm with the reason and 'webgpu' rejecting with Unsupported.
// The package served is BLOCKFFN_PKG_DIR (an installed tarball) or this working tree.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';

import { DEMO, ROOT, cliBinary, cliGenerateModel, launchChromium, startServePy } from '../js/helpers.mjs';

const FIXTURES = join(ROOT, 'tests/fixtures');
/** Golden fixtures: a checkpoint (hf/) with PyTorch reference logits, converted here per dtype. */
const GOLDEN = readdirSync(FIXTURES).filter((d) => existsSync(join(FIXTURES, d, 'hf')) && existsSync(join(FIXTURES, d, 'expected.json')));
const DTYPES = ['f32', 'f16'];
const DEMO_PROMPT = 'The history of the';
const DEMO_TOKENS = 24;
/** Relative to the largest |logit|, as the native GPU-vs-CPU tests (f32 accumulation on both). */
const TOL = 1e-3;

let dir;
let server;
let base;
let gpuContext;
let page;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'blockffn-webgpu-'));
  const site = join(dir, 'site');
  mkdirSync(site, { recursive: true });
  symlinkSync(process.env.BLOCKFFN_PKG_DIR || ROOT, join(site, 'blockffn'));
  symlinkSync(FIXTURES, join(site, 'fixtures'));
  for (const name of GOLDEN) {
    for (const dtype of DTYPES) {
      execFileSync(cliBinary(), ['convert', join(FIXTURES, name, 'hf'), join(site, 'golden', `${name}-${dtype}`), '--dtype', dtype], { stdio: 'pipe' });
    }
  }
  symlinkSync(DEMO, join(site, 'demo'));
  writeFileSync(join(site, 'index.html'), '<!doctype html><meta charset="utf-8"><title>blockffn webgpu test</title>');
  ({ server, base } = await startServePy(site));
  gpuContext = await launchChromium(join(dir, 'profile-gpu'), {}, { webgpu: true });
  page = gpuContext.pages()[0] || (await gpuContext.newPage());
  page.on('pageerror', (e) => console.error('page error:', e));
  await page.goto(base);
});

after(async () => {
  if (gpuContext) await gpuContext.close();
  if (server) server.kill();
  rmSync(dir, { recursive: true, force: true });
});

test('webgpu: the adapter is found, and is software here', async () => {
  const r = await page.evaluate(async () => {
    const { createEngine } = await import('/blockffn/js/index.js');
    const e = await createEngine({ backend: 'webgpu' });
    const info = await e.load('/fixtures/mla_block_linear/runtime/', { cache: false });
    return { info, runtime: await e.runtimeInfo(), hasGpu: !!navigator.gpu };
  });
  assert.ok(r.hasGpu, 'navigator.gpu exists with --enable-unsafe-webgpu');
  assert.equal(r.info.backend, 'webgpu');
  assert.equal(r.runtime.backend, 'webgpu');
  assert.equal(r.runtime.requestedBackend, 'webgpu');
  assert.ok(r.info.gpu && r.info.gpu.software, `SwiftShader reports a software adapter: ${JSON.stringify(r.info.gpu)}`);
  assert.ok(r.info.gpu.maxBindingBytes >= 128 * 1024 * 1024);
});

test('webgpu: every golden fixture (f32, f16) within 1e-3 of the wasm backend and (f32) of PyTorch, sparse = dense', async () => {
  assert.ok(GOLDEN.length >= 7, `golden fixtures: ${GOLDEN}`);
  for (const name of GOLDEN.flatMap((n) => DTYPES.map((d) => `${n}-${d}`))) {
    const expected = JSON.parse(readFileSync(join(FIXTURES, name.replace(/-f\d+$/, ''), 'expected.json'), 'utf8'));
    const r = await page.evaluate(
      async ({ name, ids }) => {
        const { createEngine } = await import('/blockffn/js/index.js');
        const url = `/golden/${name}/`;
        const out = {};
        for (const backend of ['webgpu', 'wasm']) {
          const e = await createEngine({ backend });
          const info = await e.load(url, { cache: false });
          out[backend] = {
            backend: info.backend,
            vocab: info.vocabSize,
            sparse: Array.from(await e.logits(ids)),
            dense: Array.from(await e.logits(ids, { mode: 'dense' })),
          };
          await e.unload();
        }
        return out;
      },
      { name, ids: expected.ids },
    );
    assert.equal(r.webgpu.backend, 'webgpu', name);
    assert.match(r.wasm.backend, /^wasm-/, name);
    const ref = expected.logits.flat();
    const scale = Math.max(...ref.map(Math.abs));
    const worst = (a, b) => a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i])), 0) / scale;
    assert.equal(r.webgpu.sparse.length, ref.length, name);
    // f16 weights are not the reference's f32 ones: those are pinned against the wasm backend only.
    const vsRef = name.endsWith('-f32') ? worst(r.webgpu.sparse, ref) : 0;
    const vsWasm = worst(r.webgpu.sparse, r.wasm.sparse);
    const denseVsSparse = worst(r.webgpu.dense, r.webgpu.sparse);
    console.log(`${name}: |webgpu - torch| ${vsRef.toExponential(2)}, |webgpu - wasm| ${vsWasm.toExponential(2)}, |dense - sparse| ${denseVsSparse.toExponential(2)}`);
    assert.ok(vsRef < TOL, `${name}: webgpu vs PyTorch ${vsRef}`);
    assert.ok(vsWasm < TOL, `${name}: webgpu vs wasm ${vsWasm}`);
    assert.ok(denseVsSparse < TOL, `${name}: webgpu dense vs sparse ${denseVsSparse}`);
  }
});

/** Greedy text, ids and per-token expert masks of the demo model on `backend`, in-thread or in a worker. */
async function demoGreedy(backend, { worker = false, mode = 'sparse', n = DEMO_TOKENS } = {}) {
  return page.evaluate(
    async ({ backend, worker, mode, prompt, n }) => {
      const { createEngine } = await import('/blockffn/js/index.js');
      const e = await createEngine({ backend, worker });
      const info = await e.load('/demo/', { cache: false });
      let text = '';
      const ids = [];
      const experts = [];
      for await (const c of e.generate(prompt, { maxTokens: n, temperature: 0, repetitionPenalty: 1, ignoreEos: true, mode })) {
        text += c.text;
        ids.push(...c.tokenIds);
        for (const m of c.experts) experts.push(Array.from(m));
      }
      const runtime = await e.runtimeInfo();
      if (worker) e.terminate();
      else await e.unload();
      return { text, ids, experts, backend: info.backend, runtime };
    },
    { backend, worker, mode, prompt: DEMO_PROMPT, n },
  );
}

// SwiftShader runs about 2.5 s per token (every dispatch is emulated on the CPU), so the long run
// is made once and the other modes are checked on its first SHORT tokens; the native tests on
// lavapipe pin 64-token greedy runs of the same GPU code (tests/gpu_model.rs).
let sparseRun = null;
const gpuSparse = () => (sparseRun ??= demoGreedy('webgpu'));
const SHORT = 6;

test('webgpu: the demo model greedy text and expert telemetry equal the wasm backend and the native CLI', async () => {
  const gpu = await gpuSparse();
  const wasm = await demoGreedy('wasm');
  const cli = cliGenerateModel(DEMO, ['--prompt', DEMO_PROMPT, '--max-new-tokens', String(DEMO_TOKENS), '--ignore-eos']);
  assert.equal(gpu.backend, 'webgpu');
  assert.equal(gpu.ids.length, DEMO_TOKENS);
  assert.deepEqual(gpu.ids, wasm.ids, 'webgpu and wasm greedy ids');
  assert.equal(gpu.text, wasm.text);
  assert.deepEqual(gpu.ids, cli.ids, 'webgpu and the native CLI');
  assert.deepEqual(gpu.experts, wasm.experts, 'per-token active experts');
  assert.ok(gpu.experts.every((m) => m.some((w) => w !== 0)), 'telemetry holds active experts');
  console.log(`demo greedy on webgpu: ${JSON.stringify(gpu.text)}`);
});

test('webgpu: dense mode gives the same greedy tokens', async () => {
  const dense = await demoGreedy('webgpu', { mode: 'dense', n: SHORT });
  assert.deepEqual(dense.ids, (await gpuSparse()).ids.slice(0, SHORT));
});

test('webgpu: the worker transport gives the same greedy tokens and telemetry', async () => {
  const inWorker = await demoGreedy('webgpu', { worker: true, n: SHORT });
  const sparse = await gpuSparse();
  assert.equal(inWorker.backend, 'webgpu', 'the worker runs on WebGPU too');
  assert.deepEqual(inWorker.ids, sparse.ids.slice(0, SHORT));
  assert.deepEqual(inWorker.experts, sparse.experts.slice(0, SHORT));
});

test('webgpu: speculative decoding (prompt lookup) gives the same greedy tokens', async () => {
  const r = await page.evaluate(
    async ({ prompt, n }) => {
      const { createEngine } = await import('/blockffn/js/index.js');
      const e = await createEngine({ backend: 'webgpu' });
      await e.load('/demo/', { cache: false });
      const ids = [];
      const steps = [];
      for await (const c of e.generate(prompt, { maxTokens: n, temperature: 0, repetitionPenalty: 1, ignoreEos: true, speculative: 'ngram', draftLen: 4 })) {
        ids.push(...c.tokenIds);
        if (c.speculation) steps.push(c.speculation);
      }
      await e.unload();
      return { ids, steps };
    },
    { prompt: DEMO_PROMPT, n: SHORT },
  );
  assert.deepEqual(r.ids, (await gpuSparse()).ids.slice(0, SHORT));
  assert.ok(r.steps.length > 0 && r.steps.every((s) => s.accepted <= s.drafted));
});

test('webgpu: abort mid-generation, then the engine generates again', async () => {
  const r = await page.evaluate(async () => {
    const { createEngine } = await import('/blockffn/js/index.js');
    const e = await createEngine({ backend: 'webgpu' });
    await e.load('/demo/', { cache: false });
    const ctrl = new AbortController();
    let n = 0;
    let code = null;
    try {
      for await (const c of e.generate('Once upon a time', { maxTokens: 50, signal: ctrl.signal })) {
        n += c.tokenIds.length;
        if (n === 3) ctrl.abort();
      }
    } catch (err) {
      code = err.code;
    }
    let again = 0;
    for await (const c of e.generate('Once upon a time', { maxTokens: 2, ignoreEos: true })) again += c.tokenIds.length;
    return { n, code, again };
  });
  assert.equal(r.code, 'Aborted');
  assert.equal(r.n, 3);
  assert.equal(r.again, 2);
});

test("webgpu: 'auto' passes over a software adapter and says why", async () => {
  const r = await page.evaluate(async () => {
    const { createEngine } = await import('/blockffn/js/index.js');
    const e = await createEngine();
    const info = await e.load('/fixtures/mla_block_linear/runtime/', { cache: false });
    return { info, runtime: await e.runtimeInfo() };
  });
  assert.match(r.info.backend, /^wasm-/);
  assert.equal(r.runtime.requestedBackend, 'auto');
  assert.match(r.info.backendReason, /software/);
});

/** In a Chromium without --enable-unsafe-webgpu: what 'auto' and 'webgpu' do on one page. */
async function withoutWebGpu(initScript) {
  const ctx = await launchChromium(join(dir, `profile-plain-${initScript ? 'nogpu' : 'noadapter'}`));
  try {
    const p = ctx.pages()[0] || (await ctx.newPage());
    if (initScript) await p.addInitScript(initScript);
    await p.goto(base);
    return await p.evaluate(async () => {
      const { createEngine } = await import('/blockffn/js/index.js');
      const e = await createEngine({ backend: 'auto' });
      const info = await e.load('/fixtures/mla_block_linear/runtime/', { cache: false });
      const ids = [];
      for await (const c of e.generate([1, 5, 9], { maxTokens: 4, ignoreEos: true })) ids.push(...c.tokenIds);
      const runtime = await e.runtimeInfo();
      let err = null;
      try {
        await e.load('/fixtures/mla_block_linear/runtime/', { cache: false, backend: 'webgpu' });
      } catch (x) {
        err = { code: x.code, message: x.message };
      }
      return { hasGpu: !!navigator.gpu, info, ids, err, runtime };
    });
  } finally {
    await ctx.close();
  }
}

test("no WebGPU: 'auto' falls back to wasm with the reason, 'webgpu' rejects with Unsupported", async () => {
  // navigator.gpu missing (browsers without WebGPU), and present with no adapter (Chromium without GPU).
  const cases = [
    [() => Object.defineProperty(Navigator.prototype, 'gpu', { get: () => undefined, configurable: true }), /navigator\.gpu/],
    [null, /adapter/],
  ];
  for (const [script, why] of cases) {
    const r = await withoutWebGpu(script);
    if (script) assert.equal(r.hasGpu, false);
    assert.match(r.info.backend, /^wasm-/);
    assert.match(r.info.backendReason, why);
    assert.equal(r.runtime.backendReason, r.info.backendReason);
    assert.equal(r.ids.length, 4);
    assert.equal(r.err && r.err.code, 'Unsupported');
    assert.match(r.err.message, /backend: 'wasm' or 'auto'/);
    console.log(`fallback: ${r.info.backendReason}`);
  }
});
