// load() against a server that stops sending (RELIABILITY.md defects 14 and 15): a stalled load
// without a signal no longer blocks the engine — a newer load() aborts it and proceeds — and
// unload() during a load wins: the load ends with Aborted and no model is loaded.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import { FIXTURE, cliGenerate, collect, importPackage, serveWith } from './helpers.mjs';

let pkg;
let engine;
const servers = [];

before(async () => {
  pkg = await importPackage();
  engine = await pkg.createEngine();
});
after(async () => {
  for (const s of servers) await s.close();
});

/**
 * The fixture over HTTP, except that model.safetensors sends its headers and first 4 KiB, then
 * nothing more (the connection stays open). `stalled` resolves when the stall begins.
 */
async function stallingServer() {
  let onStall;
  const stalled = new Promise((r) => (onStall = r));
  const s = await serveWith((name, req, res) => {
    const body = readFileSync(join(FIXTURE, name));
    res.writeHead(200, { 'Content-Type': 'application/octet-stream', 'Content-Length': body.length });
    if (name === 'model.safetensors') res.write(body.subarray(0, 4096), onStall);
    else res.end(body);
  });
  servers.push(s);
  return { ...s, stalled };
}

function isAborted(fragment) {
  return (e) => {
    assert.ok(e instanceof pkg.BlockffnError, `expected a BlockffnError, got ${e && e.stack}`);
    assert.equal(e.code, 'Aborted', e.message);
    assert.match(e.message, fragment);
    return true;
  };
}

const reference = () => cliGenerate(['--ids', '1,5,9', '--max-new-tokens', '8']).ids;

describe('a stalled load()', () => {
  test('a newer load() aborts it and loads; the stalled download is cancelled', { timeout: 20000 }, async () => {
    const s = await stallingServer();
    const stalled = engine.load(s.url); // no signal: nothing else could end it
    const outcome = stalled.then(
      () => 'loaded',
      (e) => e,
    );
    await s.stalled;
    const t0 = performance.now();
    const info = await engine.load(FIXTURE);
    assert.ok(performance.now() - t0 < 5000, 'the new load did not wait for the stalled one');
    assert.equal(info.id, FIXTURE);
    isAborted(/a newer load\(\) replaced it/)(await outcome);
    const { ids } = await collect(engine.generate([1, 5, 9], { maxTokens: 8 }));
    assert.deepEqual(ids, reference());
    await new Promise((r) => setTimeout(r, 100));
    assert.deepEqual(s.aborted, ['model.safetensors'], 'the stalled response was closed by the client');
  });

  test('three loads in a row: only the last one loads', { timeout: 20000 }, async () => {
    const s = await stallingServer();
    const first = engine.load(s.url).catch((e) => e);
    await s.stalled;
    const second = engine.load(s.url).catch((e) => e);
    const third = engine.load(FIXTURE);
    assert.equal((await third).id, FIXTURE);
    isAborted(/newer load/)(await first);
    isAborted(/newer load/)(await second);
    assert.equal((await engine.modelInfo()).id, FIXTURE);
  });

  test('unload() during a stalled load wins: the load is Aborted and no model is loaded', { timeout: 20000 }, async () => {
    await engine.load(FIXTURE);
    const s = await stallingServer();
    const loading = engine.load(s.url).catch((e) => e);
    await s.stalled;
    await engine.unload();
    isAborted(/unload\(\) was called/)(await loading);
    assert.equal((await engine.runtimeInfo()).modelLoaded, false);
    await assert.rejects(engine.modelInfo(), { code: 'InvalidInput' });
  });

  test('unload() right after a fast local load() starts also wins', async () => {
    const loading = engine.load(FIXTURE).catch((e) => e);
    await engine.unload();
    isAborted(/unload\(\) was called/)(await loading);
    assert.equal((await engine.runtimeInfo()).modelLoaded, false);
    // and the engine loads normally afterwards
    await engine.load(FIXTURE);
    const { ids } = await collect(engine.generate([1, 5, 9], { maxTokens: 8 }));
    assert.deepEqual(ids, reference());
  });

  test('AbortSignal.timeout() ends a stalled load with Aborted (it timed out), not Internal', { timeout: 20000 }, async () => {
    const s = await stallingServer();
    await assert.rejects(engine.load(s.url, { signal: AbortSignal.timeout(300) }), isAborted(/timed out/));
    await engine.load(FIXTURE);
    const { ids } = await collect(engine.generate([1, 5, 9], { maxTokens: 8 }));
    assert.deepEqual(ids, reference());
  });
});
