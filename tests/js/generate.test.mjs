// Generation through the built package equals the native CLI (same Rust sampling code), streams
// token by token with expert bitmasks and running sparsity, and stops/aborts cleanly.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { before, describe, test } from 'node:test';

import { FIXTURE, ROOT, cliBinary, cliExperts, cliGenerate, collect, importPackage } from './helpers.mjs';

let pkg;
let engine;
let info;

before(async () => {
  pkg = await importPackage();
  engine = await pkg.createEngine({ worker: false });
  info = await engine.load(FIXTURE);
});

const PROMPT_IDS = [1, 5, 9, 200, 17];

describe('ids equal `blockffn generate`', () => {
  test('greedy, ids prompt, sparse and dense', async () => {
    const cli = cliGenerate(['--ids', PROMPT_IDS.join(','), '--max-new-tokens', '24']);
    for (const mode of ['sparse', 'dense']) {
      const { ids, chunks } = await collect(engine.generate(PROMPT_IDS, { maxTokens: 24, mode }));
      assert.deepEqual(ids, cli.ids, `mode ${mode}`);
      // token by token: one chunk per token, then the final chunk
      assert.equal(chunks.length, cli.ids.length + 1);
      assert.ok(chunks.slice(0, -1).every((c) => c.tokenIds.length === 1 && !c.finishReason));
      assert.equal(chunks.at(-1).finishReason, 'length');
    }
  });

  test('seeded temperature / top-p from a text prompt; the streamed text is the CLI text', async () => {
    const args = ['--prompt', 'The river runs', '--max-new-tokens', '40', '--temperature', '0.8', '--top-p', '0.9', '--seed', '7'];
    const cli = cliGenerate(args);
    const { ids, chunks } = await collect(
      engine.generate('The river runs', { maxTokens: 40, temperature: 0.8, topP: 0.9, seed: 7 }),
    );
    assert.deepEqual(ids, cli.ids);
    assert.equal(chunks.map((c) => c.text).join(''), cli.text);
  });

  test('seeded top-k + repetition penalty, and a BigInt seed', async () => {
    const args = ['--ids', PROMPT_IDS.join(','), '--max-new-tokens', '30', '--temperature', '1.3', '--top-k', '20', '--repetition-penalty', '1.2', '--seed', '12345678901'];
    const cli = cliGenerate(args);
    const opts = { maxTokens: 30, temperature: 1.3, topK: 20, repetitionPenalty: 1.2 };
    assert.deepEqual((await collect(engine.generate(PROMPT_IDS, { ...opts, seed: 12345678901 }))).ids, cli.ids);
    assert.deepEqual((await collect(engine.generate(PROMPT_IDS, { ...opts, seed: 12345678901n }))).ids, cli.ids);
  });

  test('every architecture variant and dtype equals the CLI (GQA, dense FFN, 3-D blocks, top-k router, f16)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'blockffn-variants-'));
    const other = await pkg.createEngine();
    try {
      for (const [name, dtype] of [['gqa_dense', 'f32'], ['gqa_tied_block_linear', 'f32'], ['mla_block3d', 'f32'], ['mla_topk', 'f32'], ['mla_block_linear', 'f16']]) {
        const out = join(dir, `${name}-${dtype}`);
        execFileSync(cliBinary(), ['convert', join(ROOT, 'tests/fixtures', name, 'hf'), out, '--dtype', dtype], { stdio: 'ignore' });
        const vinfo = await other.load(out);
        assert.equal(vinfo.dtype, dtype);
        const args = ['--ids', '1,5,9', '--max-new-tokens', '16', '--temperature', '0.9', '--top-k', '50', '--seed', '2'];
        const cli = JSON.parse(execFileSync(cliBinary(), ['generate', '--model', out, ...args, '--json'], { encoding: 'utf8' }));
        const { ids, chunks } = await collect(other.generate([1, 5, 9], { maxTokens: 16, temperature: 0.9, topK: 50, seed: 2 }));
        assert.deepEqual(ids, cli.ids, `${name} ${dtype}`);
        if (vinfo.experts.count === 0) assert.equal(chunks.at(-1).stats.tls, null, 'no experts, no TLS');
        else assert.ok(chunks.at(-1).stats.tls > 0, name);
      }
    } finally {
      await other.unload();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('EOS ends generation unless ignoreEos', async () => {
    // Search a few seeds for a run that meets EOS (id 2) within the budget.
    for (let seed = 0; seed < 40; seed++) {
      const args = ['--ids', '1,5', '--max-new-tokens', '60', '--temperature', '1.5', '--seed', String(seed)];
      const cli = cliGenerate(args);
      const { ids, chunks } = await collect(engine.generate([1, 5], { maxTokens: 60, temperature: 1.5, seed }));
      assert.deepEqual(ids, cli.ids);
      if (ids.length < 60) {
        assert.equal(chunks.at(-1).finishReason, 'eos');
        const all = cliGenerate([...args, '--ignore-eos']);
        const ign = await collect(engine.generate([1, 5], { maxTokens: 60, temperature: 1.5, seed, ignoreEos: true }));
        assert.deepEqual(ign.ids, all.ids);
        assert.equal(ign.ids.length, 60);
        return;
      }
    }
    assert.fail('no seed produced EOS; the fixture changed');
  });
});

describe('telemetry', () => {
  test('each token carries its active experts (= `blockffn logits --experts`) and running TLS/CLS', async () => {
    const { ids, chunks } = await collect(engine.generate(PROMPT_IDS, { maxTokens: 40, temperature: 0.9, seed: 3 }));
    const W = info.experts.wordsPerLayer;
    const L = info.numLayers;
    assert.equal(W, Math.ceil(info.experts.count / 32));
    const perLayer = cliExperts([...PROMPT_IDS, ...ids]); // [layer][position] → sorted ids
    const tokenChunks = chunks.filter((c) => c.tokenIds.length);
    tokenChunks.forEach((c, t) => {
      assert.ok(c.experts[0] instanceof Uint32Array);
      assert.equal(c.experts[0].length, L * W);
      const got = pkg.unpackExperts(c.experts[0], W);
      const want = perLayer.map((layer) => layer[PROMPT_IDS.length + t]);
      assert.deepEqual(got, want, `token ${t}`);
    });
    // The engine's running stats (src/metrics.rs) equal the package's JS metrics over the same masks
    // (both pinned to tests/fixtures/sparsity/sparsity.json).
    const last = chunks.at(-1).stats;
    const js = pkg.sparsity(tokenChunks.map((c) => c.experts[0]), L, info.experts.count);
    assert.equal(last.tokens, tokenChunks.length);
    assert.deepStrictEqual(js, { tokens: last.tokens, tls: last.tls, cls: last.cls, reuse: last.reuse });
    assert.ok(last.cls[8] !== null && last.reuse !== null, 'a run long enough for CLS_8 and reuse');
    assert.equal(last.promptTokens, PROMPT_IDS.length);
    assert.ok(last.tokensPerSecond > 0 && last.elapsedMs >= last.prefillMs);
    // stats run: the token count grows by one per chunk
    tokenChunks.forEach((c, i) => assert.equal(c.stats.tokens, i + 1));
  });
});

describe('stopping', () => {
  test('a stop string cuts the text before it', async () => {
    const cli = cliGenerate(['--prompt', 'The river runs', '--max-new-tokens', '40']);
    const stop = cli.text.slice(6, 9);
    const { chunks } = await collect(engine.generate('The river runs', { maxTokens: 40, stop: ['zzzz-not-there', stop] }));
    const text = chunks.map((c) => c.text).join('');
    assert.equal(chunks.at(-1).finishReason, 'stop');
    assert.equal(text, cli.text.slice(0, cli.text.indexOf(stop)));
  });

  test('abort mid-stream ends the iterator promptly; the next request works', async () => {
    const ctrl = new AbortController();
    const it = engine.generate(PROMPT_IDS, { maxTokens: 200, signal: ctrl.signal });
    let n = 0;
    let t0 = 0;
    await assert.rejects(
      (async () => {
        for await (const c of it) {
          n += c.tokenIds.length;
          if (n === 3) {
            t0 = performance.now();
            ctrl.abort();
          }
        }
      })(),
      (e) => e instanceof pkg.BlockffnError && e.code === 'Aborted',
    );
    assert.equal(n, 3, 'no token after the abort');
    assert.ok(performance.now() - t0 < 100, 'the iterator ended promptly');
    const cli = cliGenerate(['--ids', PROMPT_IDS.join(','), '--max-new-tokens', '12']);
    assert.deepEqual((await collect(engine.generate(PROMPT_IDS, { maxTokens: 12 }))).ids, cli.ids);
    // an already aborted signal rejects at once
    await assert.rejects(collect(engine.generate(PROMPT_IDS, { signal: AbortSignal.abort() })), { code: 'Aborted' });
  });

  test('breaking out of the loop stops generation cleanly', async () => {
    let n = 0;
    for await (const c of engine.generate(PROMPT_IDS, { maxTokens: 100 })) {
      n += c.tokenIds.length;
      if (n === 5) break;
    }
    assert.equal(n, 5);
    const { ids } = await collect(engine.generate(PROMPT_IDS, { maxTokens: 5 }));
    assert.equal(ids.length, 5);
  });

  test('two generations can interleave (each has its own KV cache)', async () => {
    const a = engine.generate(PROMPT_IDS, { maxTokens: 10 });
    const b = engine.generate([1, 7], { maxTokens: 10, temperature: 1, seed: 9 });
    const ia = [];
    const ib = [];
    for (let i = 0; i < 11; i++) {
      const x = await a.next();
      const y = await b.next();
      if (!x.done) ia.push(...x.value.tokenIds);
      if (!y.done) ib.push(...y.value.tokenIds);
    }
    assert.deepEqual(ia, cliGenerate(['--ids', PROMPT_IDS.join(','), '--max-new-tokens', '10']).ids);
    assert.deepEqual(ib, cliGenerate(['--ids', '1,7', '--max-new-tokens', '10', '--temperature', '1', '--seed', '9']).ids);
  });
});

describe('chat.completions.create (OpenAI shape)', () => {
  const messages = [
    { role: 'system', content: 'You are terse.' },
    { role: 'user', content: 'Name a river.' },
  ];
  const chatml = '<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nName a river.<|im_end|>\n<|im_start|>assistant\n';

  test('streams deltas with a final usage; ids equal the CLI on the ChatML prompt', async () => {
    assert.equal(pkg.renderChat(messages), chatml);
    const stream = await engine.chat.completions.create({ messages, stream: true, max_tokens: 16, temperature: 0.7, top_p: 0.95, seed: 5 });
    let content = '';
    const ids = [];
    let lastChunk;
    let first = true;
    for await (const ch of stream) {
      assert.equal(ch.object, 'chat.completion.chunk');
      assert.equal(ch.choices.length, 1);
      if (first) assert.equal(ch.choices[0].delta.role, 'assistant');
      first = false;
      content += ch.choices[0].delta.content ?? '';
      ids.push(...ch.blockffn.tokenIds);
      lastChunk = ch;
    }
    const cli = cliGenerate(['--prompt', chatml, '--max-new-tokens', '16', '--temperature', '0.7', '--top-p', '0.95', '--seed', '5']);
    assert.equal(lastChunk.choices[0].finish_reason, cli.ids.length === 16 ? 'length' : 'stop');
    assert.deepEqual(ids, cli.ids.slice(0, ids.length));
    assert.equal(lastChunk.usage.completion_tokens, ids.length);
    assert.equal(lastChunk.usage.prompt_tokens, (await engine.tokenize(chatml)).length);
    assert.equal(lastChunk.usage.total_tokens, lastChunk.usage.prompt_tokens + ids.length);
    const full = await engine.chat.completions.create({ messages, max_tokens: 16, temperature: 0.7, top_p: 0.95, seed: 5 });
    assert.equal(full.object, 'chat.completion');
    assert.equal(full.choices[0].message.role, 'assistant');
    assert.equal(full.choices[0].message.content, content);
    assert.deepEqual(full.usage, lastChunk.usage);
  });

  test('bad requests are InvalidInput', async () => {
    await assert.rejects(engine.chat.completions.create({ messages: [] }), { code: 'InvalidInput' });
    await assert.rejects(engine.chat.completions.create({ messages: [{ role: 'wizard', content: 'x' }] }), { code: 'InvalidInput' });
    await assert.rejects(engine.chat.completions.create({ messages, n: 2 }), { code: 'InvalidInput' });
  });

  test('templates: ChatML default, MiniCPM form, unknown falls back', () => {
    assert.deepEqual(pkg.detectChatTemplate(null), { name: 'chatml', fallback: false });
    assert.deepEqual(pkg.detectChatTemplate({ chat_template: "{% for m in messages %}<|im_start|>{{m['role']}}..." }), { name: 'chatml', fallback: false });
    assert.deepEqual(pkg.detectChatTemplate({ chat_template: "{% if m['role']=='user' %}{{'<用户>'+m['content']+'<AI>'}}" }), { name: 'minicpm', fallback: false });
    assert.deepEqual(pkg.detectChatTemplate({ chat_template: '[INST] {{x}} [/INST]' }), { name: 'chatml', fallback: true });
    assert.equal(pkg.renderChat([{ role: 'user', content: ' hi ' }], 'minicpm'), '<用户>hi<AI>');
  });
});

describe('tokenizer and info', () => {
  test('tokenize / detokenize / modelInfo', async () => {
    const ids = await engine.tokenize('The river runs');
    assert.equal(ids[0], 1);
    assert.deepEqual(await engine.tokenize('The river runs', { addBos: false }), ids.slice(1));
    assert.equal(await engine.detokenize(ids), 'The river runs');
    assert.equal(info.backend, pkg.relaxedSimdSupported() ? 'wasm-relaxed-simd' : 'wasm-simd128');
    assert.equal(info.dtype, 'f32');
    assert.equal(info.experts.count, 12);
    assert.equal(info.numLayers, 3);
    assert.ok(info.params > 100000 && info.params * 4 <= info.weightBytes);
    assert.equal(info.chatTemplate, 'chatml');
  });

  test('invalid options and ids are InvalidInput; the engine stays usable', async () => {
    for (const opts of [{ topP: 2 }, { temperature: -1 }, { topK: 0 }, { mode: 'fast' }, { maxTokens: 1.5 }, { seed: -1 }, { stop: [3] }]) {
      await assert.rejects(collect(engine.generate(PROMPT_IDS, opts)), { code: 'InvalidInput' }, JSON.stringify(opts));
    }
    await assert.rejects(collect(engine.generate([1, 384])), (e) => e.code === 'InvalidInput' && /out of range/.test(e.message));
    await assert.rejects(collect(engine.generate([])), { code: 'InvalidInput' });
    await assert.rejects(collect(engine.generate(new Array(300).fill(5))), (e) => e.code === 'InvalidInput' && /context/.test(e.message));
    assert.equal((await collect(engine.generate(PROMPT_IDS, { maxTokens: 3 }))).ids.length, 3);
  });

  test('filling the context ends with finishReason "context"', async () => {
    const prompt = new Array(250).fill(5);
    prompt[0] = 1;
    const { ids, chunks } = await collect(engine.generate(prompt, { ignoreEos: true }));
    assert.equal(chunks.at(-1).finishReason, 'context');
    assert.equal(prompt.length + ids.length, info.contextLength + 1);
    assert.equal(chunks.at(-2).experts[0].length, 0, 'the token that did not fit has no expert set');
  });
});
