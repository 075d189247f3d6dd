// Shared helpers of the Node tests. The package under test is BLOCKFFN_PKG (the entry file of an
// installed `npm pack` tarball, as scripts/test.sh sets it) or else this working tree's js/index.js.

import { execFile, execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

export const ROOT = fileURLToPath(new URL('../../', import.meta.url));
export const FIXTURE = join(ROOT, 'tests/fixtures/mla_block_linear/runtime');
/** The demo model: its tokenizer has ChatML's <|im_start|> (3) and <|im_end|> (4) as special tokens. */
export const DEMO = join(ROOT, 'models/demo');

export function packageEntry() {
  return process.env.BLOCKFFN_PKG ? pathToFileURL(process.env.BLOCKFFN_PKG).href : pathToFileURL(join(ROOT, 'js/index.js')).href;
}

export function importPackage() {
  return import(packageEntry());
}

/** The native CLI: BLOCKFFN_BIN, else target/release/blockffn, else target/debug/blockffn. */
export function cliBinary() {
  const candidates = [process.env.BLOCKFFN_BIN, join(ROOT, 'target/release/blockffn'), join(ROOT, 'target/debug/blockffn')];
  const bin = candidates.find((p) => p && existsSync(p));
  if (!bin) throw new Error('the native CLI is not built: run `cargo build --release --features cli`');
  return bin;
}

/** `blockffn generate --model FIXTURE ... --json` → { ids, text } (`model` picks another package). */
export function cliGenerate(args, model = FIXTURE) {
  const out = execFileSync(cliBinary(), ['generate', '--model', model, ...args, '--json'], { encoding: 'utf8' });
  return JSON.parse(out);
}

/** `blockffn generate --model MODEL ... --json` → { ids, text }, for a package other than FIXTURE. */
export function cliGenerateModel(model, args) {
  const out = execFileSync(cliBinary(), ['generate', '--model', model, ...args, '--json'], {
    encoding: 'utf8',
    maxBuffer: 64 * 1024 * 1024,
  });
  return JSON.parse(out);
}

/** `blockffn logits --model FIXTURE --ids ... --experts` → active_experts[layer][position]. */
export function cliExperts(ids) {
  const out = execFileSync(cliBinary(), ['logits', '--model', FIXTURE, '--ids', ids.join(','), '--experts'], {
    encoding: 'utf8',
    maxBuffer: 256 * 1024 * 1024,
  });
  return JSON.parse(out).active_experts;
}

/**
 * Serves `dir` on 127.0.0.1 (random port). `override(name)` may return bytes (or a string) to
 * serve instead of the file. Returns { url, requests, close }.
 */
export async function serveDir(dir, override = () => undefined) {
  const requests = [];
  const server = http.createServer((req, res) => {
    const name = decodeURIComponent(new URL(req.url, 'http://x').pathname).replace(/^\/+/, '');
    requests.push(name);
    let body = override(name);
    if (body === undefined) {
      const p = join(dir, name);
      if (name.includes('..') || !existsSync(p)) {
        res.writeHead(404).end('not found');
        return;
      }
      body = readFileSync(p);
    }
    res.writeHead(200, { 'Content-Type': 'application/octet-stream', 'Content-Length': Buffer.byteLength(body) });
    res.end(body);
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address();
  return {
    url: `http://127.0.0.1:${port}/`,
    requests,
    close: () => new Promise((r) => server.close(r)),
  };
}

/**
 * Serves `site` with scripts/serve.py (COOP/COEP headers) on a free port, as the browser pages are
 * served; `extraArgs` go to serve.py (e.g. `--log FILE`). Returns { server, base }.
 */
export async function startServePy(site, extraArgs = []) {
  const server = spawn('python3', [join(ROOT, 'scripts/serve.py'), '0', site, ...extraArgs], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const base = await new Promise((resolve, reject) => {
    let out = '';
    server.stdout.on('data', (d) => {
      out += d;
      const m = out.match(/serving (http:\/\/127\.0\.0\.1:\d+\/)/);
      if (m) resolve(m[1]);
    });
    server.on('exit', (code) => reject(new Error(`serve.py exited with ${code}`)));
  });
  return { server, base };
}

/**
 * Headless system Chromium (CHROMIUM or /usr/bin/chromium, through playwright-core) with a fresh
 * profile in `profileDir`; `options` are passed to launchPersistentContext (e.g. a viewport);
 * `webgpu` turns WebGPU on.
 */
export async function launchChromium(profileDir, options = {}, { webgpu = false } = {}) {
  const { chromium } = await import('playwright-core');
  return chromium.launchPersistentContext(profileDir, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: [
      '--no-sandbox',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--disable-dev-shm-usage',
      // WebGPU on Chromium's bundled SwiftShader (a software adapter): real WebGPU with no GPU.
      ...(webgpu ? ['--enable-unsafe-webgpu'] : []),
    ],
    ...options,
  });
}

/** Every generated id of an engine.generate() run, and its chunks. */
export async function collect(iterable) {
  const ids = [];
  const chunks = [];
  for await (const c of iterable) {
    ids.push(...c.tokenIds);
    chunks.push(c);
  }
  return { ids, chunks };
}

/**
 * An HTTP server on 127.0.0.1 (random port) answering with `handler(req, res)`. `close()` also
 * cuts open connections (a stalled response would otherwise keep the server open). `closed` counts
 * requests whose connection the client closed before the response ended.
 */
export async function serveWith(handler) {
  const stats = { requests: [], aborted: [] };
  const server = http.createServer((req, res) => {
    const name = decodeURIComponent(new URL(req.url, 'http://x').pathname).replace(/^\/+/, '');
    stats.requests.push(name);
    res.on('close', () => {
      if (!res.writableFinished) stats.aborted.push(name);
    });
    handler(name, req, res);
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address();
  return {
    url: `http://127.0.0.1:${port}/`,
    ...stats,
    close: () =>
      new Promise((r) => {
        server.closeAllConnections();
        server.close(r);
      }),
  };
}

/** Re-hashes a package's files into its manifest in place (a tampered package whose manifest was regenerated). */
export function forgeManifest(dir, edit = () => {}) {
  const m = JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8'));
  for (const n of Object.keys(m.files)) {
    const b = readFileSync(join(dir, n));
    m.files[n] = { size: b.length, sha256: createHash('sha256').update(b).digest('hex') };
  }
  edit(m);
  writeFileSync(join(dir, 'manifest.json'), JSON.stringify(m));
  return m;
}

/** Runs `node [flags] --input-type=module -e script` and parses its last stdout line as JSON. */
export function runNode(flags, script, { timeout = 60000 } = {}) {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [...flags, '--input-type=module', '-e', script], { timeout, maxBuffer: 16 << 20 }, (e, stdout, stderr) => {
      const last = stdout.trim().split('\n').at(-1);
      if (e && !last) return reject(new Error(`${e.message}\n${stderr}`));
      try {
        resolve(JSON.parse(last));
      } catch {
        reject(new Error(`no JSON from the child: ${stdout}\n${stderr}`));
      }
    });
  });
}
