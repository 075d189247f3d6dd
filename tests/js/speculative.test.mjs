// Speculative decoding through the npm package (Node, wasm): greedy output equals plain greedy
// output and the native CLI's, token for token, with the same per-token experts; chunks of a
// speculative step carry several tokens with one mask each and the step's telemetry; bad options
// are typed errors.

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

test('chat completions take speculative and answer the same', async () => {
  const req = { messages: [{ role: 'user', content: 'Say something about rivers.' }], max_tokens: 24, temperature: 0 };
  const a = await engine.chat.completions.create(req);
  const b = await engine.chat.completions.create({ ...req, speculative: 'ngram' });
  assert.equal(b.choices[0].message.content, a.choices[0].message.content);
  assert.equal(b.usage.completion_tokens, a.usage.completion_tokens);
});

test('bad speculative options are typed errors', async () => {
  const first = (o) => engine.generate('Hi', o).next();
  await assert.rejects(first({ speculative: 'eagle' }), (e) => e.code === 'Unsupported' && /draft head/.test(e.message));
  await assert.rejects(first({ speculative: 'fast' }), (e) => e.code === 'InvalidInput' && /speculative/.test(e.message));
  await assert.rejects(first({ speculative: 'ngram', draftLen: 0 }), (e) => e.code === 'InvalidInput' && /draftLen/.test(e.message));
  await assert.rejects(first({ speculative: 'ngram', draftLen: 99 }), (e) => e.code === 'InvalidInput');
});
