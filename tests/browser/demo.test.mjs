// The demo page (www/) end to end in headless Chromium (system /usr/bin/chromium through
// playwright-core), served by scripts/serve.py (COOP/COEP) as scripts/demo.sh serves it: the page
// loads the embedded model in the worker engine with nothing fetched from elsewhere, a prompt streams
// text, the heatmap's counts equal the engine's active sets for the chunk shown (and those equal the
// native CLI's), sparse and dense give the same greedy text as the CLI, Escape stops, a broken or
// oversized model URL shows a readable error and the page stays usable, local files load; then
// screenshots at desktop and phone sizes go to target/test-artifacts/.
// The package served is BLOCKFFN_PKG_DIR (an installed tarball) or this working tree.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';

import { ROOT, cliBinary, importPackage, launchChromium, startServePy } from '../js/helpers.mjs';

const DEMO = join(ROOT, 'models/demo');
const ARTIFACTS = join(ROOT, 'target/test-artifacts');
const TEXT_PROMPT = 'The history of the';
const TEXT_TOKENS = 64;

let pkg;
let dir;
let server;
let base;
let context;
let page;
const requests = [];
const problems = [];

/** `blockffn generate --model models/demo ... --json` → { ids, text }. */
function cli(args) {
  return JSON.parse(execFileSync(cliBinary(), ['generate', '--model', DEMO, ...args, '--json'], { encoding: 'utf8' }));
}

/** `blockffn logits --experts` over the demo model → active_experts[layer][position]. */
function cliExperts(ids) {
  const out = execFileSync(cliBinary(), ['logits', '--model', DEMO, '--ids', ids.join(','), '--experts'], {
    encoding: 'utf8',
    maxBuffer: 512 * 1024 * 1024,
  });
  return JSON.parse(out).active_experts;
}

const pct = (x) => `${(100 * x).toFixed(1)}%`;

async function waitState(s, timeout = 60_000) {
  await page.waitForFunction((want) => document.body.dataset.state === want, s, { timeout });
}

async function lastGen() {
  return page.evaluate(() => window.blockffnDemo.gens().at(-1));
}

/**
 * Types a prompt and sends it with Enter (keyboard only); resolves when generation has ended.
 * Greedy (temperature 0) also turns the repetition penalty off, as the CLI's plain greedy run.
 */
async function sendPrompt(text, { kind, mode, temperature, maxTokens }) {
  await page.check(`input[name="kind"][value="${kind}"]`);
  await page.check(`input[name="mode"][value="${mode}"]`);
  if (temperature !== undefined) await page.fill('#temperature', String(temperature));
  if (temperature === 0) await page.fill('#rep', '1');
  if (maxTokens !== undefined) await page.fill('#max-tokens', String(maxTokens));
  await page.focus('#prompt');
  await page.keyboard.type(text);
  const before = await page.evaluate(() => window.blockffnDemo.gens().length);
  await page.keyboard.press('Enter');
  await page.waitForFunction((n) => window.blockffnDemo.gens().length > n, before);
  await waitState('ready');
  return lastGen();
}

before(async () => {
  pkg = await importPackage();
  dir = mkdtempSync(join(tmpdir(), 'blockffn-demo-'));
  const site = join(dir, 'site');
  mkdirSync(site);
  // The layout scripts/demo.sh serves (the repository root): /www/, /js/, /pkg/, /models/.
  const pkgDir = process.env.BLOCKFFN_PKG_DIR || ROOT;
  symlinkSync(join(ROOT, 'www'), join(site, 'www'));
  symlinkSync(join(pkgDir, 'js'), join(site, 'js'));
  symlinkSync(join(pkgDir, 'pkg'), join(site, 'pkg'));
  symlinkSync(join(ROOT, 'models'), join(site, 'models'));
  // A model whose manifest claims 5 GiB of weights: refused before anything is downloaded.
  const m = JSON.parse(readFileSync(join(DEMO, 'manifest.json'), 'utf8'));
  m.files['model.safetensors'].size = 5 * 1024 ** 3;
  mkdirSync(join(site, 'huge'));
  writeFileSync(join(site, 'huge/manifest.json'), JSON.stringify(m));
  mkdirSync(ARTIFACTS, { recursive: true });

  ({ server, base } = await startServePy(site));
  context = await launchChromium(join(dir, 'profile'), { viewport: { width: 1280, height: 900 } });
  context.on('request', (r) => requests.push(r.url()));
  page = context.pages()[0] || (await context.newPage());
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('console', (msg) => msg.type() === 'error' && problems.push(`console error: ${msg.text()}`));
});

after(async () => {
  if (context) await context.close();
  if (server) server.kill();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test('the page loads the embedded model in the worker engine; every request stays on 127.0.0.1', { timeout: 120_000 }, async (t) => {
  const t0 = Date.now();
  await page.goto(base + 'www/');
  await waitState('ready');
  const loadMs = Date.now() - t0;
  const r = await page.evaluate(() => ({
    info: window.blockffnDemo.info(),
    runtime: window.blockffnDemo.runtime(),
    events: window.blockffnDemo.loadEvents(),
    backend: document.getElementById('backend').textContent,
    model: document.getElementById('model-name').textContent,
    cells: document.querySelectorAll('#heatmap .cell').length,
    focused: document.activeElement && document.activeElement.id,
    unlabeled: [...document.querySelectorAll('button, input, select, textarea')]
      .filter((el) => !(el.labels && el.labels.length) && !el.getAttribute('aria-label') && !el.textContent.trim())
      .map((el) => el.id || el.outerHTML.slice(0, 60)),
  }));
  assert.equal(r.info.numLayers, 10);
  assert.equal(r.info.experts.count, 32);
  assert.equal(r.cells, 10 * 32, 'one heatmap cell per (layer, expert)');
  assert.match(r.backend, /wasm-relaxed-simd · Web Worker · cross-origin isolated/, 'Chromium has relaxed SIMD: the fused build runs');
  assert.equal(r.runtime.crossOriginIsolated, true);
  assert.match(r.model, /demo model · 11\.35 M params/);
  assert.equal(r.focused, 'prompt', 'the message box has the focus once the model is ready');
  assert.deepEqual(r.unlabeled, [], 'every control has an accessible name');
  // progress: download → verify → parse → ready, bytes up to the total
  const order = ['download', 'verify', 'parse', 'ready'];
  assert.deepEqual([...new Set(r.events.map((e) => e.phase))], order);
  const dl = r.events.filter((e) => e.phase === 'download');
  assert.equal(dl.at(-1).loaded, dl.at(-1).total);
  const foreign = requests.filter((u) => !u.startsWith(base) && !u.startsWith('data:') && !u.startsWith('blob:'));
  assert.deepEqual(foreign, [], 'no request leaves the machine');
  t.diagnostic(`page ready in ${loadMs} ms (${requests.length} requests, all to ${base})`);
});

let textGen;

test('a prompt streams text; the heatmap shows exactly the engine-reported active sets of each chunk', { timeout: 120_000 }, async (t) => {
  // Count the distinct states of the reply's text while it streams.
  await page.evaluate(() => {
    window.__streamed = [];
    const log = document.getElementById('log');
    new MutationObserver(() => {
      const last = log.querySelector('.msg.streaming .text');
      if (last && document.body.dataset.state === 'generating') window.__streamed.push(last.textContent.length);
    }).observe(log, { childList: true, subtree: true, characterData: true });
  });
  const g = await sendPrompt(TEXT_PROMPT, { kind: 'text', mode: 'sparse', temperature: 0, maxTokens: TEXT_TOKENS });
  textGen = g;
  const streamed = await page.evaluate(() => [...new Set(window.__streamed)].filter((n) => n > 0));
  assert.ok(streamed.length >= 5, `text arrived in ${streamed.length} steps while generating`);
  assert.equal(g.ids.length, TEXT_TOKENS);
  assert.equal(g.finishReason, 'length');
  assert.ok(g.text.length > 20);
  assert.equal(await page.textContent('.msg.continuation:last-of-type .text'), g.text);
  assert.equal(await page.locator('.msg.continuation:last-of-type .strip .tok').count(), TEXT_TOKENS, 'one strip token per generated token');

  // The page recorded the engine's masks; they equal the native CLI's active sets at those positions.
  const info = await page.evaluate(() => window.blockffnDemo.info());
  const words = info.experts.wordsPerLayer;
  const truth = cliExperts([...g.promptIds, ...g.ids]);
  for (let k = 0; k < g.ids.length; k++) {
    const sets = pkg.unpackExperts(g.masks[k], words, info.numLayers);
    for (let l = 0; l < info.numLayers; l++) {
      assert.deepEqual(sets[l], truth[l][g.promptIds.length + k], `token ${k}, layer ${l}`);
    }
  }

  // For several chunk sizes and tokens: the cells' counts equal the counts recomputed here.
  const strip = page.locator('.msg.continuation:last-of-type .strip');
  let checked = 0;
  for (const L of [1, 4, 8, 32]) {
    await page.selectOption('#chunk-size', String(L));
    for (const tok of [0, 1, L, 30, TEXT_TOKENS - 1]) {
      await strip.locator(`.tok[data-t="${tok}"]`).focus();
      const shown = await page.evaluate(() => {
        const hm = document.getElementById('heatmap');
        return {
          start: Number(hm.dataset.start),
          end: Number(hm.dataset.end),
          token: Number(hm.dataset.token),
          L: Number(hm.dataset.chunkSize),
          cells: [...hm.querySelectorAll('.cell')].map((c) => ({
            l: Number(c.dataset.layer),
            e: Number(c.dataset.expert),
            count: Number(c.dataset.count),
            union: c.classList.contains('u'),
            mine: c.classList.contains('t'),
          })),
          live: document.getElementById('token-live').textContent,
          hook: window.blockffnDemo.heatmap(),
        };
      });
      // the chunk: the first token alone (CLS starts after it), then windows of L from token 1
      const start = tok === 0 ? 0 : 1 + Math.floor((tok - 1) / L) * L;
      const end = tok === 0 ? 1 : Math.min(g.ids.length, start + L);
      assert.deepEqual([shown.token, shown.L, shown.start, shown.end], [tok, L, start, end]);
      const counts = new Map();
      for (let k = start; k < end; k++) {
        pkg.unpackExperts(g.masks[k], words, info.numLayers).forEach((ids, l) => ids.forEach((e) => counts.set(`${l}/${e}`, (counts.get(`${l}/${e}`) ?? 0) + 1)));
      }
      const mine = new Set(pkg.unpackExperts(g.masks[tok], words, info.numLayers).flatMap((ids, l) => ids.map((e) => `${l}/${e}`)));
      for (const c of shown.cells) {
        const want = counts.get(`${c.l}/${c.e}`) ?? 0;
        assert.equal(c.count, want, `L=${L} token ${tok}: layer ${c.l} expert ${c.e}`);
        assert.equal(c.union, want > 0, 'the union is outlined');
        assert.equal(c.mine, mine.has(`${c.l}/${c.e}`), "the focused token's experts are marked");
      }
      assert.deepEqual(shown.hook.counts, shown.cells.map((c) => c.count));
      // the focused token's experts per layer are announced
      const layer0 = pkg.unpackExperts(g.masks[tok], words, info.numLayers)[0];
      assert.match(shown.live, new RegExp(`layer 0: ${layer0.length ? layer0.join(', ') : 'none'};`));
      checked++;
    }
  }
  // The running TLS and CLS_L shown are the engine's, and equal the definitions applied to the masks.
  await page.selectOption('#chunk-size', '8');
  await page.focus('#prompt');
  const js = pkg.sparsity(g.masks, info.numLayers, info.experts.count);
  assert.deepStrictEqual(js, { tokens: g.stats.tokens, tls: g.stats.tls, cls: g.stats.cls, reuse: g.stats.reuse }, 'the metrics of src/metrics.rs');
  const { tls } = js;
  const cls8 = js.cls[8];
  assert.equal(await page.textContent('#m-tls'), pct(tls));
  assert.equal(await page.textContent('#m-cls'), pct(cls8));
  const full = [1, 2, 4, 8, 16, 32, 64].filter((L) => L <= g.ids.length - 1);
  assert.equal(await page.locator('#cls-plot circle.cls').count(), full.length, 'CLS_L plotted for every L with a full chunk');
  const active = g.masks.reduce((a, m) => a + pkg.countExperts(m), 0);
  const skipped = g.masks.length * info.numLayers * info.experts.count - active;
  assert.match(await page.textContent('#s-blocks'), new RegExp(`^${skipped.toLocaleString('en-US')} of `));
  t.diagnostic(
    `${g.ids.length} tokens at ${g.stats.tokensPerSecond.toFixed(1)} tok/s (sparse); TLS ${pct(tls)}, CLS_8 ${pct(cls8)}; ` +
      `${checked} (chunk size, token) views checked cell by cell; masks equal the CLI's active sets`,
  );
});

test('chat: a message streams a reply that matches the CLI on the ChatML prompt', { timeout: 120_000 }, async (t) => {
  await page.fill('#temperature', '0.7');
  await page.fill('#top-p', '0.9');
  await page.fill('#rep', '1.1');
  await page.fill('#seed', '3');
  const g = await sendPrompt('Tell me about the sea.', { kind: 'chat', mode: 'sparse', maxTokens: 48 });
  assert.equal(g.kind, 'chat');
  assert.ok(g.ids.length >= 1 && g.text.trim().length > 0, `a reply: ${JSON.stringify(g.text)}`);
  assert.equal(await page.textContent('.msg.assistant:last-of-type .text'), g.text);
  const chatml = '<|im_start|>user\nTell me about the sea.<|im_end|>\n<|im_start|>assistant\n';
  const ref = cli(['--prompt', chatml, '--max-new-tokens', '48', '--temperature', '0.7', '--top-p', '0.9', '--repetition-penalty', '1.1', '--seed', '3']);
  assert.deepEqual(g.ids, ref.ids.slice(0, g.ids.length));
  if (g.finishReason === 'stop') assert.ok([3, 4].includes(ref.ids[g.ids.length]), 'stopped at the end of the turn');
  t.diagnostic(`chat reply (${g.ids.length} tokens, ${g.finishReason}): ${JSON.stringify(g.text)}`);
});

for (const drafter of ['ngram', 'eagle']) {
test(`speculative decoding (${drafter}): the same greedy text as plain, accepted drafts marked, acceptance shown`, { timeout: 150_000 }, async (t) => {
  const plain = textGen;
  assert.equal(await page.isEnabled(`input[name="spec"][value="${drafter}"]`), true, 'the demo model ships a draft head');
  await page.check(`input[name="spec"][value="${drafter}"]`);
  try {
    const g = await sendPrompt(TEXT_PROMPT, { kind: 'text', mode: 'sparse', temperature: 0, maxTokens: TEXT_TOKENS });
    assert.deepEqual(g.ids, plain.ids, 'speculative greedy ids = plain greedy ids');
    assert.equal(g.text, plain.text);
    assert.deepEqual(g.masks, plain.masks, 'one mask per token, the same active sets');
    const dom = await page.evaluate(() => {
      const bubble = [...document.querySelectorAll('.strip')].at(-1).parentElement;
      return {
        chips: bubble.querySelectorAll('.tok').length,
        drafts: bubble.querySelectorAll('.tok.draft').length,
        meta: bubble.querySelector('.meta').textContent,
      };
    });
    assert.equal(dom.chips, TEXT_TOKENS);
    assert.match(dom.meta, /speculative: \d+ of \d+ drafts accepted, [\d.]+ tokens per forward/);
    assert.equal(g.stats.speculation.accepted, dom.drafts, 'each accepted draft is marked');
    t.diagnostic(`${dom.drafts} accepted draft tokens marked; ${dom.meta}`);
    // The heatmap's verified-span view: the latest token's step, its union read from the engine.
    await page.check('#span-view');
    const span = await page.evaluate(() => ({
      caption: document.getElementById('chunk-caption').textContent,
      start: Number(document.getElementById('heatmap').dataset.start),
      end: Number(document.getElementById('heatmap').dataset.end),
      rejectedOnly: document.querySelectorAll('#heatmap .cell.r').length,
      union: document.querySelectorAll('#heatmap .cell.u, #heatmap .cell.r').length,
    }));
    await page.uncheck('#span-view');
    assert.match(span.caption, /span verified at token/);
    assert.ok(span.end > span.start && span.end <= TEXT_TOKENS);
    assert.ok(span.union > 0);
    t.diagnostic(`verified-span view: ${span.caption} (${span.union} blocks, ${span.rejectedOnly} only for rejected drafts)`);
  } finally {
    await page.check('input[name="spec"][value="off"]');
  }
});
}

test('the backend selector reloads the model; WebGPU missing is a readable error and the model stays loaded', { timeout: 150_000 }, async () => {
  await page.selectOption('#backend-choice', 'wasm');
  await waitState('ready');
  assert.match(await page.textContent('#backend'), /^wasm-/);
  // This Chromium has no WebGPU adapter: 'webgpu' refuses, and the wasm model is loaded again.
  await page.selectOption('#backend-choice', 'webgpu');
  await waitState('ready');
  const alert = await page.textContent('#alert');
  assert.match(alert, /WebGPU is not usable here/);
  assert.equal(await page.inputValue('#backend-choice'), 'wasm');
  assert.match(await page.textContent('#backend'), /^wasm-/);
  await page.click('#alert-close');
  await page.selectOption('#backend-choice', 'auto');
  await waitState('ready');
  const runtime = await page.evaluate(() => window.blockffnDemo.runtime());
  assert.match(runtime.backend, /^wasm-/);
  assert.match(runtime.backendReason, /WebGPU is not used/);
});

test('sparse and dense give identical greedy text, equal to the CLI; Escape stops a generation', { timeout: 150_000 }, async (t) => {
  const sparse = textGen;
  const dense = await sendPrompt(TEXT_PROMPT, { kind: 'text', mode: 'dense', temperature: 0, maxTokens: TEXT_TOKENS });
  assert.equal(dense.mode, 'dense');
  assert.equal(dense.text, sparse.text);
  assert.deepEqual(dense.ids, sparse.ids);
  assert.deepEqual(dense.masks, sparse.masks, 'dense mode reports the same active sets');
  const ref = cli(['--prompt', TEXT_PROMPT, '--max-new-tokens', String(TEXT_TOKENS)]);
  assert.deepEqual(sparse.ids, ref.ids);
  assert.equal(sparse.text, ref.text);
  assert.deepEqual(cli(['--prompt', TEXT_PROMPT, '--max-new-tokens', String(TEXT_TOKENS), '--dense']).ids, ref.ids);

  // The comparison button reruns the last prompt greedily in both modes.
  await page.click('#compare');
  await page.waitForFunction(() => document.getElementById('compare-out').dataset.identical !== '', null, { timeout: 60_000 });
  await waitState('ready');
  const cmp = await page.evaluate(() => ({ ...window.blockffnDemo.compare(), out: document.getElementById('compare-out').textContent }));
  assert.equal(cmp.identical, true, cmp.out);
  assert.deepEqual(cmp.sparse.ids, ref.ids);
  assert.match(cmp.out, /Identical text and token ids/);

  // Escape stops: a long generation ends within a moment, and the next one works.
  await page.check('input[name="kind"][value="text"]');
  await page.fill('#max-tokens', '900');
  await page.focus('#prompt');
  await page.keyboard.type('Once upon a time');
  const count = await page.evaluate(() => window.blockffnDemo.gens().length);
  await page.keyboard.press('Enter');
  await page.waitForFunction((n) => window.blockffnDemo.gens().length > n && window.blockffnDemo.gens().at(-1).ids.length >= 5, count);
  const t0 = Date.now();
  await page.keyboard.press('Escape');
  await waitState('ready', 5_000);
  const stopMs = Date.now() - t0;
  const stopped = await lastGen();
  assert.equal(stopped.finishReason, 'stopped');
  assert.ok(stopped.ids.length < 900);
  t.diagnostic(
    `greedy ${TEXT_TOKENS} tokens: sparse ${sparse.stats.tokensPerSecond.toFixed(1)} tok/s, dense ${dense.stats.tokensPerSecond.toFixed(1)} tok/s; ` +
      `compare button: ${cmp.out}; Escape ended generation in ${stopMs} ms after ${stopped.ids.length} tokens`,
  );
});

test('a broken or oversized model URL shows a readable error; the page stays usable; local files load', { timeout: 150_000 }, async (t) => {
  await page.fill('#max-tokens', '16');
  const tryUrl = async (url) => {
    await page.fill('#model-url', url);
    await page.click('#load-url');
    await page.waitForFunction(() => !document.getElementById('alert').hidden);
    await waitState('ready');
    return page.evaluate(() => ({
      code: document.getElementById('alert').dataset.code,
      title: document.getElementById('alert-title').textContent,
      detail: document.getElementById('alert-detail').textContent,
      model: document.getElementById('model-name').textContent,
    }));
  };
  const notFound = await tryUrl('/no/such/model/');
  assert.equal(notFound.code, 'ModelNotFound');
  assert.match(notFound.title, /No model found there/);
  assert.match(notFound.detail, /manifest\.json returned 404.*demo model is loaded again/s);
  assert.doesNotMatch(notFound.detail, /panicked|RuntimeError|unreachable|undefined/);
  await page.click('#alert-close');
  const huge = await tryUrl('/huge/');
  assert.equal(huge.code, 'OutOfMemory');
  assert.match(huge.title, /too large/);
  assert.match(huge.detail, /5\.00 GiB/);
  assert.match(huge.model, /demo model/);
  assert.ok(!requests.some((u) => u.includes('/huge/model.safetensors')), 'no weight byte of the huge model was requested');

  // still usable: greedy text equals the CLI
  const g = await sendPrompt('The river', { kind: 'text', mode: 'sparse', temperature: 0, maxTokens: 16 });
  assert.deepEqual(g.ids, cli(['--prompt', 'The river', '--max-new-tokens', '16']).ids);

  // local files: the file picker, then a drop of files on the page
  const files = ['manifest.json', 'config.json', 'model.safetensors', 'tokenizer.json'].map((f) => join(DEMO, f));
  await page.setInputFiles('#pick-files', files);
  await page.waitForFunction(() => document.getElementById('model-name').textContent.startsWith('4 local files'), null, { timeout: 60_000 });
  await waitState('ready');
  assert.equal(await page.evaluate(() => window.blockffnDemo.info().id), 'files:manifest.json');
  const events = await page.evaluate(() => window.blockffnDemo.loadEvents());
  assert.deepEqual([...new Set(events.map((e) => e.phase))], ['download', 'verify', 'parse', 'ready']);
  const g2 = await sendPrompt('The river', { kind: 'text', mode: 'sparse', temperature: 0, maxTokens: 16 });
  assert.deepEqual(g2.ids, g.ids);
  await page.evaluate(async () => {
    const dt = new DataTransfer();
    for (const name of ['manifest.json', 'config.json', 'model.safetensors', 'tokenizer.json']) {
      dt.items.add(new File([await (await fetch(`/models/demo/${name}`)).blob()], name));
    }
    document.getElementById('drop').dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true }));
  });
  await page.waitForFunction(() => document.body.dataset.state === 'loading');
  await waitState('ready');
  assert.match(await page.textContent('#model-name'), /^4 local files/);
  // back to the demo model by keyboard
  await page.focus('#load-default');
  await page.keyboard.press('Enter');
  await page.waitForFunction(() => document.getElementById('model-name').textContent.startsWith('demo model'), null, { timeout: 60_000 });
  await waitState('ready');
  t.diagnostic(`errors shown: ${notFound.title} / ${huge.title} ${huge.detail.slice(0, 120)}…`);
});

test('screenshots at desktop and phone sizes; the phone layout does not scroll sideways', { timeout: 120_000 }, async (t) => {
  await sendPrompt(TEXT_PROMPT, { kind: 'text', mode: 'sparse', temperature: 0.7, maxTokens: 64 });
  await page.locator('.msg.continuation:last-of-type .strip .tok[data-t="20"]').hover();
  const desktop = join(ARTIFACTS, 'demo-desktop.png');
  await page.screenshot({ path: desktop, fullPage: true });
  await page.setViewportSize({ width: 375, height: 812 });
  await page.mouse.move(0, 0);
  await page.waitForTimeout(200);
  const w = await page.evaluate(() => ({ scroll: document.documentElement.scrollWidth, client: document.documentElement.clientWidth }));
  assert.ok(w.scroll <= w.client, `no horizontal scrolling at 375 px (${w.scroll} > ${w.client})`);
  const phone = join(ARTIFACTS, 'demo-phone.png');
  await page.screenshot({ path: phone, fullPage: true });
  assert.deepEqual(problems, [], 'no page or console errors');
  t.diagnostic(`screenshots: ${desktop} ${phone}`);
  console.log(`demo screenshots: ${desktop}, ${phone}`);
});
