// Speculative decoding through the npm package (Node, wasm): greedy output equals plain greedy
// output and the native CLI's, token for token, with the same per-token experts, for prompt lookup
// and the demo package's draft head (loaded from its manifest; draftHead: false leaves it out);
// chunks of a speculative step carry several tokens with one mask each and the step's telemetry;
// bad options are typed errors.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { before, test } from 'node:test';

import { DEMO, cliGenerateModel, collect, importPackage } from './helpers.mjs';

let pkg;
let engine;
let info;
const text = readFileSync(join(DEMO, 'validation.txt'), 'utf8');
const para = text.slice(2000, 2400).replace(/\s+\S*$/, '');
const PROMPTS = [
  'The history of the',
  text.slice(0, 300),
  `${para}\n\nQuoted exactly:\n${para.slice(0, 80)}`,
  'The United States, the United States, the United',
];

before(async () => {
  pkg = await importPackage();
  engine = await pkg.createEngine({ worker: false });
  info = await engine.load(DEMO);
});

async function run(prompt, options) {
  const chunks = [];
  const ids = [];
  const experts = [];
  for await (const c of engine.generate(prompt, { maxTokens: 40, temperature: 0, ignoreEos: true, ...options })) {
    chunks.push(c);
    ids.push(...c.tokenIds);
    experts.push(...c.experts.map((m) => Array.from(m)));
  }
  return { chunks, ids, experts };
}

test('greedy speculative = greedy plain = the CLI, with the same per-token experts', async () => {
  let accepted = 0;
  for (const prompt of PROMPTS) {
    const plain = await run(prompt, {});
    for (const [speculative, draftLen] of [['ngram', undefined], ['auto', 4], ['ngram', 'auto']]) {
      for (const mode of ['sparse', 'dense']) {
        const spec = await run(prompt, { speculative, draftLen, mode });
        assert.deepEqual(spec.ids, plain.ids, `${speculative}/${draftLen}/${mode}: ${JSON.stringify(prompt.slice(0, 30))}`);
        assert.deepEqual(spec.experts, plain.experts, 'one mask per token, as in plain decoding');
        for (const c of spec.chunks) {
          assert.equal(c.experts.length, c.tokenIds.length);
          if (c.tokenIds.length) {
            assert.ok(c.speculation, 'each chunk says what its step did');
            assert.ok(c.speculation.accepted <= c.speculation.drafted);
            assert.equal(c.tokenIds.length, 1 + c.speculation.accepted, 'a step emits its token and the accepted drafts');
            assert.equal(c.speculation.union.length, info.numLayers);
          }
        }
        const totals = spec.chunks.at(-1).stats.speculation;
        assert.ok(totals && totals.verifies + totals.plain > 0);
        accepted += totals.accepted;
      }
    }
    const cli = cliGenerateModel(DEMO, ['--prompt', prompt, '--max-new-tokens', '40', '--ignore-eos', '--speculative', 'ngram']);
    assert.deepEqual(cli.ids, plain.ids, 'the CLI with --speculative ngram');
  }
  assert.ok(accepted > 0, 'some drafts were accepted');
});

test('the draft head: loaded from the manifest, greedy eagle = greedy plain = the CLI, drafts accepted', async () => {
  assert.ok(info.draftHead && info.draftHead.params > 100_000, JSON.stringify(info.draftHead));
  let drafted = 0;
  let accepted = 0;
  for (const prompt of PROMPTS) {
    const plain = await run(prompt, {});
    const configs = [['eagle', undefined, 'sparse', 0], ['eagle', 4, 'dense', 0], ['auto', undefined, 'sparse', 0], ['eagle', 6, 'sparse', 2], ['ngram', 6, 'sparse', 2]];
    for (const [speculative, draftLen, mode, draftTree] of configs) {
      const spec = await run(prompt, { speculative, draftLen, mode, draftTree });
      assert.deepEqual(spec.ids, plain.ids, `${speculative}/${draftLen}/${mode}/tree ${draftTree}: ${JSON.stringify(prompt.slice(0, 30))}`);
      assert.deepEqual(spec.experts, plain.experts);
      const totals = spec.chunks.at(-1).stats.speculation;
      if (speculative === 'eagle' && !draftTree) {
        drafted += totals.drafted;
        accepted += totals.accepted;
      }
    }
    const cli = cliGenerateModel(DEMO, ['--prompt', prompt, '--max-new-tokens', '40', '--ignore-eos', '--speculative', 'eagle']);
    assert.deepEqual(cli.ids, plain.ids, 'the CLI with --speculative eagle');
  }
  assert.ok(accepted > 0.25 * drafted, `the head's chain drafts are accepted (${accepted} of ${drafted})`);
});

test('draftHead: false loads without the head; eagle is then Unsupported and auto is prompt lookup', async () => {
  const e2 = await pkg.createEngine({ worker: false });
  const i2 = await e2.load(DEMO, { draftHead: false, cache: false });
  assert.equal(i2.draftHead, null);
  await assert.rejects(e2.generate('Hi', { speculative: 'eagle' }).next(), (e) => e.code === 'Unsupported' && /draft head/.test(e.message));
  const ids = [];
  for await (const c of e2.generate(PROMPTS[0], { maxTokens: 24, temperature: 0, ignoreEos: true, speculative: 'auto' })) ids.push(...c.tokenIds);
  assert.deepEqual(ids, (await run(PROMPTS[0], { maxTokens: 24 })).ids);
  await assert.rejects(e2.load(DEMO, { draftHead: 'no' }), (e) => e.code === 'InvalidInput' && /draftHead/.test(e.message));
  await e2.unload();
});

test('chat completions take speculative and answer the same', async () => {
  const req = { messages: [{ role: 'user', content: 'Say something about rivers.' }], max_tokens: 24, temperature: 0 };
  const a = await engine.chat.completions.create(req);
  const b = await engine.chat.completions.create({ ...req, speculative: 'ngram' });
  assert.equal(b.choices[0].message.content, a.choices[0].message.content);
  assert.equal(b.usage.completion_tokens, a.usage.completion_tokens);
});

test('bad speculative options are typed errors', async () => {
  const first = (o) => engine.generate('Hi', o).next();
  await assert.rejects(first({ speculative: 'fast' }), (e) => e.code === 'InvalidInput' && /speculative/.test(e.message));
  await assert.rejects(first({ speculative: 'ngram', draftLen: 0 }), (e) => e.code === 'InvalidInput' && /draftLen/.test(e.message));
  await assert.rejects(first({ speculative: 'ngram', draftLen: 99 }), (e) => e.code === 'InvalidInput');
  await assert.rejects(first({ speculative: 'ngram', draftTree: 4 }), (e) => e.code === 'InvalidInput' && /draftTree/.test(e.message));
});
