// The JS error contract (RELIABILITY.md defects 13 and 3): every failure is a typed BlockffnError
// that says what was wrong — unknown option names (with the nearest valid one), malformed prompts,
// a signal that is not an AbortSignal, chat errors in the chat API's own names — and a trap in the
// WebAssembly instance reaches the caller as a typed Internal error, after which the engine
// restarts the instance and loads and generates exactly as before.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { FIXTURE, cliGenerate, collect, importPackage, packageEntry, runNode } from './helpers.mjs';

let pkg;
let engine;

before(async () => {
  pkg = await importPackage();
  engine = await pkg.createEngine();
  await engine.load(FIXTURE);
});
after(() => engine.unload());

function invalid(fragment, not) {
  return (e) => {
    assert.ok(e instanceof pkg.BlockffnError, `expected a BlockffnError, got ${e && e.stack}`);
    assert.equal(e.code, 'InvalidInput', e.message);
    assert.match(e.message, fragment);
    if (not) assert.doesNotMatch(e.message, not);
    return true;
  };
}

const reference = () => cliGenerate(['--ids', '1,5,9', '--max-new-tokens', '8']).ids;
const messages = [{ role: 'user', content: 'Name a river.' }];

describe('unknown option names are InvalidInput, naming the nearest valid one', () => {
  test('generate()', async () => {
    await assert.rejects(
      collect(engine.generate([1, 5, 9], { maxtokens: 2 })),
      invalid(/^generate\(\): unknown option `maxtokens`; did you mean `maxTokens`\?$/),
    );
    await assert.rejects(collect(engine.generate([1, 5, 9], { top_p: 0.9 })), invalid(/unknown option `top_p`; did you mean `topP`\?/));
    await assert.rejects(collect(engine.generate([1, 5, 9], { wibble: 1 })), invalid(/unknown option `wibble`; the options are `maxTokens`, /));
  });

  test('load(), createEngine(), tokenize() and chat.completions.create()', async () => {
    await assert.rejects(engine.load(FIXTURE, { onprogress: () => {} }), invalid(/load\(\): unknown option `onprogress`; did you mean `onProgress`\?/));
    await assert.rejects(engine.load(FIXTURE, { maxMemory: 1e9 }), invalid(/did you mean `maxMemoryBytes`\?/));
    await assert.rejects(pkg.createEngine({ workers: false }), invalid(/createEngine\(\): unknown option `workers`; did you mean `worker`\?/));
    await assert.rejects(engine.tokenize('hi', { addbos: false }), invalid(/did you mean `addBos`\?/));
    await assert.rejects(
      engine.chat.completions.create({ messages, max_token: 4 }),
      invalid(/chat\.completions\.create\(\): unknown option `max_token`; did you mean `max_tokens`\?/),
    );
    await assert.rejects(engine.chat.completions.create({ messages, maxTokens: 4 }), invalid(/did you mean `max_tokens`\?/));
    // OpenAI fields with no effect here are accepted; features the engine lacks are refused by name.
    const r = await engine.chat.completions.create({ messages, max_tokens: 2, model: 'x', user: 'u', seed: 1 });
    assert.equal(r.object, 'chat.completion');
    await assert.rejects(engine.chat.completions.create({ messages, tools: [] }), invalid(/tools is not supported: this engine has no tool calling/));
    await assert.rejects(engine.chat.completions.create({ messages, logprobs: true }), invalid(/logprobs is not supported/));
  });
});

describe('values of the wrong kind', () => {
  test('a signal that is not an AbortSignal', async () => {
    const ctrl = new AbortController();
    await assert.rejects(collect(engine.generate([1], { signal: ctrl })), invalid(/signal must be an AbortSignal.*pass controller\.signal/));
    await assert.rejects(engine.load(FIXTURE, { signal: 'soon' }), invalid(/signal must be an AbortSignal/));
    await assert.rejects(engine.chat.completions.create({ messages, signal: {} }), invalid(/signal must be an AbortSignal/));
  });

  test('malformed prompts', async () => {
    await assert.rejects(collect(engine.generate({ length: -1 })), invalid(/generate\(\): the ids' length must be a non-negative integer, got -1/));
    await assert.rejects(collect(engine.generate({ length: 2 ** 40 })), invalid(/more than any model's context/));
    await assert.rejects(collect(engine.generate(42)), invalid(/generate\(\) takes a string, an array of token ids or \{ segments \}, got 42/));
    await assert.rejects(collect(engine.generate({ segments: [{ text: 1 }] })), invalid(/segments\[0\] must be \{ text: string \} or \{ control: string \}/));
    await assert.rejects(engine.detokenize({ length: -1 }), invalid(/detokenize\(\): the ids' length/));
    await assert.rejects(collect(engine.generate([1], { ignoreEos: 'yes' })), invalid(/ignoreEos must be true or false, got "yes"/));
  });

  test('chat errors use the chat names and say NaN', async () => {
    await assert.rejects(engine.chat.completions.create({ messages, max_tokens: -1 }), invalid(/^max_tokens must be an integer >= 0, got -1$/, /maxTokens/));
    await assert.rejects(engine.chat.completions.create({ messages, temperature: NaN }), invalid(/^temperature must be a finite number >= 0, got NaN$/));
    await assert.rejects(engine.chat.completions.create({ messages, top_p: 2 }), invalid(/^top_p must be/, /topP/));
    await assert.rejects(engine.chat.completions.create({ messages, repetition_penalty: 0 }), invalid(/^repetition_penalty must be/));
    await assert.rejects(engine.chat.completions.create({ messages, n: 3 }), invalid(/n must be 1/));
    await assert.rejects(engine.chat.completions.create({ messages: [] }), invalid(/messages must be a non-empty array/));
    await assert.rejects(collect(engine.generate([1], { temperature: NaN })), invalid(/^temperature must be a finite number >= 0, got NaN$/));
  });

  test('AbortSignal.timeout() during generation is Aborted, saying it timed out', async () => {
    const it = engine.generate([1, 5, 9], { maxTokens: 1e9, ignoreEos: true, signal: AbortSignal.timeout(50) });
    await assert.rejects(collect(it), (e) => e instanceof pkg.BlockffnError && e.code === 'Aborted' && /timed out/.test(e.message));
    assert.deepEqual((await collect(engine.generate([1, 5, 9], { maxTokens: 8 }))).ids, reference());
  });
});

describe('a trap in the WebAssembly instance', () => {
  test('a trapping step() whose free() then throws: the caller gets the trap, typed; the instance restarts', async () => {
    // The raw bindings of the installed package: the same module instance the engine runs.
    const raw = await import(new URL('../pkg/blockffn.js', packageEntry()).href);
    const proto = raw.Generation.prototype;
    const { step, free } = proto;
    const memBefore = (await engine.runtimeInfo()).wasmMemoryBytes;
    proto.step = () => {
      throw new WebAssembly.RuntimeError('unreachable');
    };
    proto.free = () => {
      throw new Error('attempted to take ownership of Rust value while it was borrowed');
    };
    try {
      await assert.rejects(collect(engine.generate([1, 5, 9], { maxTokens: 4 })), (e) => {
        assert.ok(e instanceof pkg.BlockffnError, `expected a BlockffnError, got ${e && e.stack}`);
        assert.equal(e.code, 'Internal');
        assert.match(e.message, /trapped \(unreachable\); it was restarted, which unloaded the model — load it again/);
        assert.doesNotMatch(e.message, /ownership/);
        assert.ok(e.cause instanceof WebAssembly.RuntimeError);
        return true;
      });
      // A non-trap error followed by a throwing free(): still the first error.
      proto.step = () => {
        throw new Error('boom');
      };
      await engine.load(FIXTURE);
      await assert.rejects(collect(engine.generate([1, 5, 9], { maxTokens: 4 })), (e) => e.code === 'Internal' && /boom/.test(e.message));
    } finally {
      proto.step = step;
      proto.free = free;
    }
    // The restart dropped the model (a trapped instance's objects are unusable) and started small.
    await assert.rejects(engine.modelInfo(), (e) => e.code === 'Internal' && /load the model again/.test(e.message));
    assert.ok((await engine.runtimeInfo()).wasmMemoryBytes < memBefore, 'the new instance has a fresh, smaller memory');
    await engine.load(FIXTURE);
    assert.deepEqual((await collect(engine.generate([1, 5, 9], { maxTokens: 8 }))).ids, reference());
  });

  test('a real trap (an allocation failing inside Rust under a 64 MiB memory cap): typed, then load and generate work', { timeout: 60000 }, async () => {
    const script = `
      const { createEngine, BlockffnError } = await import(${JSON.stringify(packageEntry())});
      const engine = await createEngine();
      await engine.load(${JSON.stringify(FIXTURE)});
      const mem = async () => (await engine.runtimeInfo()).wasmMemoryBytes;
      const loaded = await mem();
      const seen = (e) => ({ typed: e instanceof BlockffnError, code: e.code, message: e.message, cause: e.cause && e.cause.name });
      let trap = null;
      try { await engine.tokenize('ab '.repeat(3 << 20)); } catch (e) { trap = seen(e); }
      const restarted = await mem();
      let info = null;
      try { await engine.modelInfo(); } catch (e) { info = seen(e); }
      await engine.unload();
      await engine.load(${JSON.stringify(FIXTURE)});
      const ids = [];
      for await (const c of engine.generate([1, 5, 9], { maxTokens: 8 })) ids.push(...c.tokenIds);
      console.log(JSON.stringify({ trap, info, ids, loaded, restarted }));`;
    const out = await runNode(['--wasm-max-mem-pages=1024'], script);
    assert.ok(out.trap, 'the tokenize call failed');
    assert.equal(out.trap.typed, true);
    assert.equal(out.trap.code, 'Internal', out.trap.message);
    assert.equal(out.trap.cause, 'RuntimeError');
    assert.match(out.trap.message, /trapped \(unreachable\); it was restarted/);
    assert.ok(out.restarted < out.loaded, `memory after the restart (${out.restarted}) is below the trapped instance's (${out.loaded})`);
    assert.equal(out.info.code, 'Internal');
    assert.deepEqual(out.ids, reference());
  });
});
