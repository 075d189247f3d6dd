// Model loading through the built package: HTTP with progress, picked File objects, and every
// failure as a typed BlockffnError — after which the engine still loads and generates.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import { FIXTURE, cliGenerate, collect, importPackage, packageEntry, serveDir, serveWith } from './helpers.mjs';

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

async function serve(override) {
  const s = await serveDir(FIXTURE, override);
  servers.push(s);
  return s;
}

const manifest = () => JSON.parse(readFileSync(join(FIXTURE, 'manifest.json'), 'utf8'));
const sha = (b) => createHash('sha256').update(b).digest('hex');

/** The engine still works: loads the good fixture and generates what the CLI generates. */
async function assertUsable() {
  await engine.load(FIXTURE);
  const { ids } = await collect(engine.generate([1, 5, 9], { maxTokens: 8 }));
  assert.deepEqual(ids, cliGenerate(['--ids', '1,5,9', '--max-new-tokens', '8']).ids);
}

function isCode(code) {
  return (e) => {
    assert.ok(e instanceof pkg.BlockffnError, `expected a BlockffnError, got ${e}`);
    assert.equal(e.code, code, e.message);
    assert.ok(!/panicked|RuntimeError|unreachable/.test(e.message), e.message);
    return true;
  };
}

describe('loading over HTTP', () => {
  test('progress phases arrive in order with byte counts; the model generates like the CLI', async () => {
    const s = await serve();
    const events = [];
    const info = await engine.load(s.url, { onProgress: (e) => events.push(e) });
    assert.equal(info.id, s.url);
    const order = ['download', 'verify', 'parse', 'ready'];
    const phases = events.map((e) => order.indexOf(e.phase));
    assert.ok(phases.every((p) => p >= 0));
    assert.deepEqual([...new Set(events.map((e) => e.phase))], order);
    assert.ok(phases.every((p, i) => i === 0 || p >= phases[i - 1]), 'phases never go back');
    const dl = events.filter((e) => e.phase === 'download');
    const total = Object.entries(manifest().files).reduce((a, [, f]) => a + f.size, 0);
    assert.ok(dl.every((e, i) => e.total === total && (i === 0 || e.loaded >= dl[i - 1].loaded)));
    assert.equal(dl.at(-1).loaded, total);
    assert.equal(events.at(-1).phase, 'ready');
    assert.deepEqual(
      s.requests.sort(),
      ['config.json', 'manifest.json', 'model.safetensors', 'tokenizer.json'],
      'each file fetched once',
    );
    const { ids } = await collect(engine.generate('The river', { maxTokens: 10 }));
    assert.deepEqual(ids, cliGenerate(['--prompt', 'The river', '--max-new-tokens', '10']).ids);
  });

  test('a wrong URL is ModelNotFound', async () => {
    const s = await serve();
    await assert.rejects(engine.load(s.url + 'no/such/model/'), isCode('ModelNotFound'));
    await assert.rejects(engine.load(s.url + 'no/such/model/'), /manifest\.json.*404.*blockffn convert/s);
    await assertUsable();
  });

  test('an unreachable server is Network', async () => {
    const s = await serve();
    const url = s.url;
    await s.close();
    servers.splice(servers.indexOf(s), 1);
    await assert.rejects(engine.load(url), isCode('Network'));
    await assertUsable();
  });

  test('a corrupted weight file is IntegrityMismatch', async () => {
    const bad = Buffer.from(readFileSync(join(FIXTURE, 'model.safetensors')));
    bad[bad.length - 100] ^= 0x01;
    const s = await serve((name) => (name === 'model.safetensors' ? bad : undefined));
    await assert.rejects(engine.load(s.url), isCode('IntegrityMismatch'));
    await assert.rejects(engine.load(s.url), /model\.safetensors has sha256 .* download or convert it again/);
    await assertUsable();
  });

  test('a truncated weight file and a corrupted tokenizer are IntegrityMismatch', async () => {
    const w = readFileSync(join(FIXTURE, 'model.safetensors'));
    const s1 = await serve((name) => (name === 'model.safetensors' ? w.subarray(0, w.length - 10) : undefined));
    await assert.rejects(engine.load(s1.url), (e) => isCode('IntegrityMismatch')(e) && /truncated/.test(e.message));
    const t = readFileSync(join(FIXTURE, 'tokenizer.json'), 'utf8').replace('"<unk>"', '"<UNK>"');
    const s2 = await serve((name) => (name === 'tokenizer.json' ? t : undefined));
    await assert.rejects(engine.load(s2.url), (e) => isCode('IntegrityMismatch')(e) && /tokenizer\.json/.test(e.message));
    await assertUsable();
  });

  test('a model too big for wasm32 is OutOfMemory before anything is allocated or downloaded', async () => {
    const m = manifest();
    m.files['model.safetensors'].size = 5 * 1024 ** 3;
    const s = await serve((name) => (name === 'manifest.json' ? JSON.stringify(m) : undefined));
    await engine.unload();
    const before = (await engine.runtimeInfo()).wasmMemoryBytes;
    await assert.rejects(engine.load(s.url), (e) => isCode('OutOfMemory')(e) && /5\.00 GiB.*--dtype/.test(e.message));
    // wasm32 holds one buffer of at most 2 GiB (Rust's isize::MAX): a 3 GiB model cannot load either.
    m.files['model.safetensors'].size = 3 * 1024 ** 3;
    await assert.rejects(engine.load(s.url), (e) => isCode('OutOfMemory')(e) && /3\.00 GiB.*2\.00 GiB/.test(e.message));
    // A size past 2^53 (not even a JS number) is refused the same way.
    const raw = JSON.stringify(m).replace(`"size":${3 * 1024 ** 3}`, '"size":10000000000000000000');
    const s2 = await serve((name) => (name === 'manifest.json' ? raw : undefined));
    await assert.rejects(engine.load(s2.url), (e) => isCode('OutOfMemory')(e) && /10000000000000000000 bytes/.test(e.message));
    assert.equal((await engine.runtimeInfo()).wasmMemoryBytes, before, 'wasm memory did not grow');
    assert.deepEqual(s.requests, ['manifest.json', 'manifest.json'], 'no weight byte was requested');
    assert.deepEqual(s2.requests, ['manifest.json']);
    // A smaller ceiling (e.g. a phone) applies the same check.
    await assert.rejects(engine.load(FIXTURE, { maxMemoryBytes: 1024 ** 2 }), isCode('OutOfMemory'));
    await assertUsable();
  });

  test('a failed WebAssembly.Memory growth is OutOfMemory (not a trap); the engine stays usable', async () => {
    // A child Node whose wasm memories may not exceed 64 MiB, loading a package whose manifest
    // claims 200 MB of weights, and whose server declares the same Content-Length: the pre-checks
    // pass, so the buffer is allocated before the body arrives, and growing the memory fails.
    const m = manifest();
    const claim = 200 * 1024 ** 2;
    m.files['model.safetensors'].size = claim;
    const s = await serveWith((name, req, res) => {
      const body = name === 'manifest.json' ? Buffer.from(JSON.stringify(m)) : readFileSync(join(FIXTURE, name));
      res.writeHead(200, { 'Content-Length': name === 'model.safetensors' ? claim : body.length });
      if (name === 'model.safetensors') res.write(body, () => res.destroy());
      else res.end(body);
    });
    servers.push(s);
    const script = `
      const { createEngine } = await import(${JSON.stringify(packageEntry())});
      const engine = await createEngine();
      let err = null;
      try { await engine.load(${JSON.stringify(s.url)}); } catch (e) { err = { code: e.code, message: e.message }; }
      await engine.load(${JSON.stringify(FIXTURE)});
      const ids = [];
      for await (const c of engine.generate([1, 5, 9], { maxTokens: 8 })) ids.push(...c.tokenIds);
      console.log(JSON.stringify({ err, ids }));`;
    const out = await new Promise((resolve, reject) => {
      execFile(process.execPath, ['--wasm-max-mem-pages=1024', '--input-type=module', '-e', script], (e, stdout, stderr) =>
        e ? reject(new Error(stderr || e.message)) : resolve(JSON.parse(stdout)),
      );
    });
    assert.equal(out.err && out.err.code, 'OutOfMemory', JSON.stringify(out.err));
    assert.match(out.err.message, /cannot allocate 209715200 bytes/);
    assert.deepEqual(out.ids, cliGenerate(['--ids', '1,5,9', '--max-new-tokens', '8']).ids);
  });

  test('a manifest of another format, a bad config and a dtype mismatch are typed', async () => {
    const m = manifest();
    const s1 = await serve((name) => (name === 'manifest.json' ? JSON.stringify({ ...m, format_version: 9 }) : undefined));
    await assert.rejects(engine.load(s1.url), (e) => isCode('InvalidCheckpoint')(e) && /re-convert/.test(e.message));
    const cfg = JSON.parse(readFileSync(join(FIXTURE, 'config.json'), 'utf8'));
    delete cfg.scale_emb;
    const cfgText = JSON.stringify(cfg);
    const m2 = structuredClone(m);
    m2.files['config.json'] = { size: Buffer.byteLength(cfgText), sha256: sha(cfgText) };
    const s2 = await serve((name) => (name === 'manifest.json' ? JSON.stringify(m2) : name === 'config.json' ? cfgText : undefined));
    await assert.rejects(engine.load(s2.url), (e) => isCode('InvalidConfig')(e) && /scale_emb/.test(e.message));
    await assert.rejects(engine.load(FIXTURE, { dtype: 'f16' }), (e) => isCode('InvalidConfig')(e) && /f32/.test(e.message));
    await assertUsable();
  });

  test('abort while loading is Aborted', async () => {
    const ctrl = new AbortController();
    const s = await serve();
    const p = engine.load(s.url, {
      signal: ctrl.signal,
      onProgress: (e) => e.phase === 'download' && e.loaded > 0 && ctrl.abort(),
    });
    await assert.rejects(p, isCode('Aborted'));
    await assert.rejects(engine.load(s.url, { signal: AbortSignal.abort() }), isCode('Aborted'));
    await assertUsable();
  });
});

describe('loading picked files and local paths', () => {
  test('File objects (as from <input type=file webkitdirectory>)', async () => {
    const files = readdirSync(FIXTURE).map((n) => new File([readFileSync(join(FIXTURE, n))], n));
    const info = await engine.load(files);
    assert.match(info.id, /^files:/);
    const { ids } = await collect(engine.generate([1, 5, 9], { maxTokens: 8 }));
    assert.deepEqual(ids, cliGenerate(['--ids', '1,5,9', '--max-new-tokens', '8']).ids);
    const noManifest = files.filter((f) => f.name !== 'manifest.json');
    await assert.rejects(engine.load(noManifest), (e) => isCode('ModelNotFound')(e) && /manifest\.json/.test(e.message));
    const noWeights = files.filter((f) => f.name !== 'model.safetensors');
    await assert.rejects(engine.load(noWeights), isCode('ModelNotFound'));
    await assert.rejects(engine.load(42), isCode('InvalidInput'));
    await assertUsable();
  });

  test('a missing directory is ModelNotFound; no model loaded is InvalidInput; unload', async () => {
    await assert.rejects(engine.load('/no/such/dir'), isCode('ModelNotFound'));
    await engine.unload();
    await assert.rejects(engine.modelInfo(), isCode('InvalidInput'));
    await assert.rejects(collect(engine.generate([1])), isCode('InvalidInput'));
    await assertUsable();
    // A generation that started before unload finishes (it shares the model).
    const it = engine.generate([1, 5, 9], { maxTokens: 8 });
    const first = await it.next();
    await engine.unload();
    const { ids } = await collect(it);
    assert.deepEqual([...first.value.tokenIds, ...ids], cliGenerate(['--ids', '1,5,9', '--max-new-tokens', '8']).ids);
  });

  test('the worker transport reports Unsupported where there is no Worker (Node)', async () => {
    await assert.rejects(pkg.createEngine({ worker: true }), isCode('Unsupported'));
    assert.equal(await pkg.hasModelInCache('http://127.0.0.1:1/m/'), false, 'no Cache API in Node');
  });
});
