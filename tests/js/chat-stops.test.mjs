// chatStops(template): the stop strings chat.completions.create uses, exported so a page can run a
// chat turn through engine.generate (per-token chunks) and stop where the chat API stops.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { FIXTURE, collect, importPackage } from './helpers.mjs';

test('chatStops names the turn ends of each template, and generate with them ends where the chat API ends', async () => {
  const pkg = await importPackage();
  assert.deepEqual(pkg.chatStops('chatml'), ['<|im_end|>', '<|im_start|>']);
  assert.deepEqual(pkg.chatStops('minicpm'), ['<用户>']);
  const engine = await pkg.createEngine();
  const info = await engine.load(FIXTURE);
  const messages = [{ role: 'user', content: 'Name a river.' }];
  const opts = { max_tokens: 24, temperature: 0.9, seed: 2 };
  const ids = [];
  let content = '';
  for await (const ch of await engine.chat.completions.create({ messages, stream: true, ...opts })) {
    if (ch.choices[0].finish_reason === null) ids.push(...ch.blockffn.tokenIds);
    content += ch.choices[0].delta.content ?? '';
  }
  const direct = await collect(
    engine.generate(pkg.renderChat(messages, info.chatTemplate), {
      maxTokens: 24,
      temperature: 0.9,
      seed: 2,
      stop: pkg.chatStops(info.chatTemplate),
    }),
  );
  assert.ok(ids.length > 0 && content.length > 0, 'the chat turn produced tokens');
  assert.equal(direct.chunks.map((c) => c.text).join(''), content);
  assert.deepEqual(direct.ids.slice(0, ids.length), ids);
});
