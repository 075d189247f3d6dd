// Loading hostile packages (RELIABILITY.md defect 5): nothing a package claims is trusted for
// memory. An endless or device-backed manifest.json is refused after at most 1 MiB; a manifest
// claiming 1.9 GiB of weights for a 0.5 MB file fails with IntegrityMismatch without growing wasm
// memory — whether the real size is known up front (Content-Length, File.size, fstat) or not
// (chunked response); and a buffer allocated for a load that then fails is freed and reused.
// Also a Node path to manifest.json loads like the directory (defect 15).

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync, symlinkSync, cpSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import { FIXTURE, cliGenerate, collect, forgeManifest, importPackage, serveWith } from './helpers.mjs';

const MiB = 1024 ** 2;
const CLAIM = Math.floor(1.9 * 1024 ** 3); // what the hostile manifest says model.safetensors holds
const WEIGHTS = readFileSync(join(FIXTURE, 'model.safetensors'));

let pkg;
let engine;
const cleanups = [];

before(async () => {
  pkg = await importPackage();
  engine = await pkg.createEngine();
  await engine.load(FIXTURE); // the engine's own memory is in place before anything is measured
  await engine.unload();
});
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

const memory = async () => (await engine.runtimeInfo()).wasmMemoryBytes;

function isCode(code, fragment) {
  return (e) => {
    assert.ok(e instanceof pkg.BlockffnError, `expected a BlockffnError, got ${e && e.stack}`);
    assert.equal(e.code, code, e.message);
    if (fragment) assert.match(e.message, fragment);
    return true;
  };
}

/** The fixture's manifest with model.safetensors claimed at `size` bytes (sha256 kept). */
function claiming(size) {
  const m = JSON.parse(readFileSync(join(FIXTURE, 'manifest.json'), 'utf8'));
  m.files['model.safetensors'].size = size;
  return JSON.stringify(m);
}

/** A copy of the fixture whose manifest claims `size` bytes of weights. */
function hostileDir(size) {
  const dir = mkdtempSync(join(tmpdir(), 'blockffn-hostile-'));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  cpSync(FIXTURE, dir, { recursive: true });
  forgeManifest(dir, (m) => (m.files['model.safetensors'].size = size));
  return dir;
}

/**
 * Serves the fixture with `manifest` as manifest.json; model.safetensors as `weights` (bytes, or a
 * function writing the response), with a Content-Length unless `chunked`.
 */
async function serve({ manifest, weights = WEIGHTS, chunked = false }) {
  const s = await serveWith((name, req, res) => {
    if (name === 'model.safetensors' && typeof weights === 'function') return weights(res);
    const body = name === 'manifest.json' && manifest !== undefined ? Buffer.from(manifest) : name === 'model.safetensors' ? weights : null;
    let bytes = body;
    if (!bytes) {
      try {
        bytes = readFileSync(join(FIXTURE, name));
      } catch {
        res.writeHead(404).end();
        return;
      }
    }
    if (chunked) {
      res.writeHead(200, { 'Content-Type': 'application/octet-stream' }); // no Content-Length: chunked
      for (let o = 0; o < bytes.length; o += 64 * 1024) res.write(bytes.subarray(o, o + 64 * 1024));
      res.end();
    } else {
      res.writeHead(200, { 'Content-Type': 'application/octet-stream', 'Content-Length': bytes.length }).end(bytes);
    }
  });
  cleanups.push(s.close);
  return s;
}

/** The engine loads the real fixture afterwards, within `memoryCeiling`, and generates what the CLI does. */
async function assertUsable(memoryCeiling) {
  await engine.load(FIXTURE);
  if (memoryCeiling !== undefined) assert.ok((await memory()) <= memoryCeiling, 'loading the real model reused the freed memory');
  const { ids } = await collect(engine.generate([1, 5, 9], { maxTokens: 8 }));
  assert.deepEqual(ids, cliGenerate(['--ids', '1,5,9', '--max-new-tokens', '8']).ids);
  await engine.unload();
}

describe('manifest.json is read up to 1 MiB', () => {
  test('an endless manifest.json over HTTP is InvalidCheckpoint, and the download is cancelled', { timeout: 20000 }, async () => {
    let sent = 0;
    const s = await serveWith((name, req, res) => {
      res.writeHead(200, { 'Content-Type': 'application/json' });
      const chunk = Buffer.alloc(64 * 1024, 0x20);
      const pump = () => {
        while (!res.destroyed && res.write(chunk)) sent += chunk.length;
        if (!res.destroyed) res.once('drain', pump);
      };
      pump();
    });
    cleanups.push(s.close);
    const rss = process.memoryUsage().rss;
    await assert.rejects(engine.load(s.url), isCode('InvalidCheckpoint', /manifest\.json is larger than 1\.0 MiB/));
    assert.ok(process.memoryUsage().rss - rss < 256 * MiB, 'memory stayed bounded');
    await new Promise((r) => setTimeout(r, 200));
    assert.deepEqual(s.aborted, ['manifest.json'], 'the client closed the endless response');
    assert.ok(sent < 64 * MiB, `the server could send only ${sent} bytes before the client stopped reading`);
  });

  test('manifest.json or tokenizer.json linked to /dev/zero (or a FIFO) is refused at once, not read', { timeout: 20000 }, async () => {
    const dir = mkdtempSync(join(tmpdir(), 'blockffn-devzero-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    for (const n of readdirSync(FIXTURE)) if (n !== 'manifest.json') symlinkSync(join(FIXTURE, n), join(dir, n));
    symlinkSync('/dev/zero', join(dir, 'manifest.json'));
    await assert.rejects(engine.load(dir), isCode('ModelNotFound', /manifest\.json is not a regular file/));
    rmSync(join(dir, 'manifest.json'));
    symlinkSync(join(FIXTURE, 'manifest.json'), join(dir, 'manifest.json'));
    rmSync(join(dir, 'tokenizer.json'));
    symlinkSync('/dev/zero', join(dir, 'tokenizer.json'));
    await assert.rejects(engine.load(dir), isCode('ModelNotFound', /tokenizer\.json is not a regular file/));
    rmSync(join(dir, 'tokenizer.json'));
    execFileSync('mkfifo', [join(dir, 'tokenizer.json')]); // opening it for reading would block until a writer came
    await assert.rejects(engine.load(dir), isCode('ModelNotFound', /tokenizer\.json is not a regular file \(a directory, FIFO or device\)/));
    await assertUsable();
  });
});

describe('a manifest claiming 1.9 GiB for a 0.5 MB weight file', () => {
  const noGrowth = async (load, fragment) => {
    const before = await memory();
    await assert.rejects(load(), isCode('IntegrityMismatch', fragment));
    assert.equal(await memory(), before, 'wasm memory did not grow');
  };
  const recorded = new RegExp(`model\\.safetensors is ${WEIGHTS.length} bytes but manifest\\.json records ${CLAIM}`);

  test('over HTTP with Content-Length: refused before anything is allocated', async () => {
    const manifest = claiming(CLAIM);
    assert.ok(manifest.length < 700, `a ${manifest.length}-byte manifest`);
    const s = await serve({ manifest });
    await noGrowth(() => engine.load(s.url), recorded);
  });

  test('over HTTP without Content-Length (chunked): allocation waits for the bytes, which never come', async () => {
    const s = await serve({ manifest: claiming(CLAIM), chunked: true });
    await noGrowth(() => engine.load(s.url), recorded);
  });

  test('from a Node path (fstat) and from File objects (File.size)', async () => {
    const dir = hostileDir(CLAIM);
    await noGrowth(() => engine.load(dir), recorded);
    const files = readdirSync(dir).map((n) => new File([readFileSync(join(dir, n))], n));
    await noGrowth(() => engine.load(files), recorded);
    await assertUsable();
  });
});

describe('a buffer allocated for a load that fails is freed and reused', () => {
  const CLAIM64 = 64 * MiB;

  test('Content-Length lying with the manifest (64 MiB declared, 0.5 MB sent): the second failure and the real model grow nothing', { timeout: 30000 }, async () => {
    const s = await serve({
      manifest: claiming(CLAIM64),
      weights: (res) => {
        res.writeHead(200, { 'Content-Type': 'application/octet-stream', 'Content-Length': CLAIM64 });
        res.write(WEIGHTS, () => setTimeout(() => res.destroy(), 50)); // then the connection drops
      },
    });
    const before = await memory();
    await assert.rejects(engine.load(s.url), isCode('Network', /model\.safetensors broke off/));
    const afterFirst = await memory();
    assert.ok(afterFirst - before >= CLAIM64 - 4 * MiB, 'the declared size was allocated (its size was asserted twice)');
    await assert.rejects(engine.load(s.url), isCode('Network'));
    assert.equal(await memory(), afterFirst, 'the second attempt reused the freed buffer');
    await assertUsable(afterFirst);
  });

  test('chunked, 40 MiB sent against 64 MiB claimed: allocated at half the claim, freed at the end of the stream', { timeout: 30000 }, async () => {
    const junk = Buffer.alloc(40 * MiB, 7);
    const s = await serve({ manifest: claiming(CLAIM64), weights: junk, chunked: true });
    await assert.rejects(engine.load(s.url), isCode('IntegrityMismatch', /is 41943040 bytes but manifest\.json records 67108864/));
    const afterFirst = await memory();
    await assert.rejects(engine.load(s.url), isCode('IntegrityMismatch'));
    assert.equal(await memory(), afterFirst, 'the second attempt reused the freed buffer');
    await assertUsable(afterFirst);
  });

  test('a real model without Content-Length loads exactly (whole file held until its size is proven)', async () => {
    const s = await serve({ chunked: true });
    const info = await engine.load(s.url);
    assert.equal(info.weightBytes, WEIGHTS.length);
    const { ids } = await collect(engine.generate([1, 5, 9], { maxTokens: 8 }));
    assert.deepEqual(ids, cliGenerate(['--ids', '1,5,9', '--max-new-tokens', '8']).ids);
  });
});

describe('local paths', () => {
  test('a Node path ending in manifest.json loads like its directory', async () => {
    const info = await engine.load(join(FIXTURE, 'manifest.json'));
    assert.equal(info.numLayers, 3);
    const { ids } = await collect(engine.generate([1, 5, 9], { maxTokens: 8 }));
    assert.deepEqual(ids, cliGenerate(['--ids', '1,5,9', '--max-new-tokens', '8']).ids);
    await engine.load(new URL(`file://${join(FIXTURE, 'manifest.json')}`));
    assert.equal((await engine.modelInfo()).numLayers, 3);
  });
});
