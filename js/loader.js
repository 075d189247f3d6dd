// Model loading: URL / File[] / (Node) local directory sources, streamed download with byte
// progress, SHA-256 checks against manifest.json, Cache API storage, memory checks before any
// allocation, and weights streamed straight into the wasm WeightBuffer.
//
// Nothing a package says is trusted for memory: manifest.json is read up to MAX_MANIFEST_BYTES;
// every file's real size (Content-Length, File.size, fstat) is compared with the manifest before
// anything is allocated for it; and where the real size is not known up front (a chunked or
// compressed response), the weight buffer is allocated only once the bytes that arrived prove
// the manifest's size is at least half true.

import { BlockffnError, abortError, throwIfAborted, toBlockffnError } from './errors.js';
import { isNode, nodeImport, wasmEpoch } from './wasm.js';

export const CACHE_NAME = 'blockffn-v1';
export const MANIFEST = 'manifest.json';
export const WEIGHTS = 'model.safetensors';
/** Files of a package the engine reads (others listed in the manifest are ignored). */
// The optional draft head (speculative: 'eagle'): both files or neither.
const DRAFT_HEAD = ['eagle.json', 'eagle.safetensors'];
const WANTED = ['config.json', 'tokenizer.json', 'tokenizer_config.json', WEIGHTS, ...DRAFT_HEAD];

/** wasm32 addresses at most 4 GiB. */
export const WASM32_MAX_BYTES = 4 * 1024 ** 3;
/** One allocation on wasm32 is at most isize::MAX bytes (Rust's limit): the weights are one buffer. */
export const WASM32_MAX_BUFFER = 2 ** 31 - 1;
/** Room kept for the engine itself, the tokenizer, the KV cache and activations. */
const RESERVE_BYTES = 64 * 1024 ** 2;
const CACHE_WRITE_CHUNK = 4 * 1024 ** 2;
const NODE_READ_CHUNK = 1024 ** 2;
/** A real manifest is a few hundred bytes; anything past this is not one (an endless response, /dev/zero). */
export const MAX_MANIFEST_BYTES = 1024 ** 2;
/** Config, tokenizer and tokenizer_config are read into JS memory whole: refused past this. */
export const MAX_SMALL_FILE_BYTES = 64 * 1024 ** 2;

const fmtBytes = (n) =>
  n >= 1024 ** 3 ? `${(n / 1024 ** 3).toFixed(2)} GiB` : n >= 1024 ** 2 ? `${(n / 1024 ** 2).toFixed(1)} MiB` : `${n} bytes`;

// ---------------------------------------------------------------------------------------------
// Sources

function hasCacheApi() {
  return typeof caches !== 'undefined' && caches && typeof caches.open === 'function';
}

/** Resolves a model directory URL (relative URLs against the page), with a trailing slash. */
export function modelBaseUrl(url) {
  const base = typeof location !== 'undefined' && location.href ? location.href : undefined;
  let u;
  try {
    u = new URL(String(url), base);
  } catch (e) {
    throw new BlockffnError('InvalidInput', `"${url}" is not a valid model URL; pass the URL of a converted model directory`, {
      cause: e,
    });
  }
  if (u.pathname.endsWith('/' + MANIFEST)) u.pathname = u.pathname.slice(0, -MANIFEST.length);
  if (!u.pathname.endsWith('/')) u.pathname += '/';
  return u;
}

function fileUrl(base, name) {
  const u = new URL(name, base);
  u.search = base.search;
  return u.href;
}

/**
 * The URL of file `name` (default manifest.json) of the model at `url`, as load() and the cache
 * helpers resolve it: relative to the page, `…/manifest.json` naming its directory, the query kept.
 */
export function modelFileUrl(url, name = MANIFEST) {
  return fileUrl(modelBaseUrl(url), name);
}

/** The chunks of `stream`; a consumer that stops early (an error, an abort) cancels the stream. */
async function* readStream(stream, signal, what) {
  const reader = stream.getReader();
  const onAbort = () => reader.cancel().catch(() => {});
  signal && signal.addEventListener('abort', onAbort, { once: true });
  let done = false;
  try {
    for (;;) {
      throwIfAborted(signal);
      let r;
      try {
        r = await reader.read();
      } catch (e) {
        throwIfAborted(signal);
        throw new BlockffnError('Network', `the download of ${what} broke off (${e && e.message ? e.message : e}); try again`, {
          cause: e,
        });
      }
      throwIfAborted(signal);
      if (r.done) {
        done = true;
        return;
      }
      if (r.value && r.value.byteLength) yield r.value;
    }
  } finally {
    signal && signal.removeEventListener('abort', onAbort);
    if (!done) reader.cancel().catch(() => {});
    try {
      reader.releaseLock();
    } catch {
      /* already released */
    }
  }
}

/**
 * The body size a response declares, when it is the size of the bytes `fetch` will yield: not for
 * a compressed body (Content-Length counts the compressed bytes), nor for a cross-origin response,
 * whose Content-Encoding the page may not see.
 */
function declaredSize(res) {
  const len = res.headers.get('content-length');
  const enc = res.headers.get('content-encoding');
  if (res.type === 'cors' || res.type === 'opaque' || (enc && enc !== 'identity')) return undefined;
  return len !== null && /^\d+$/.test(len.trim()) ? Number(len) : undefined;
}

class UrlSource {
  constructor(url, cache) {
    this.base = modelBaseUrl(url);
    this.id = this.base.href;
    this.cache = cache; // Cache | null
  }
  async open(name, signal) {
    const url = fileUrl(this.base, name);
    if (this.cache) {
      try {
        const hit = await this.cache.match(url);
        if (hit && hit.body) {
          const discard = () => hit.body.cancel().catch(() => {});
          return { chunks: readStream(hit.body, signal, name), size: declaredSize(hit), fromCache: true, discard };
        }
      } catch {
        /* a broken cache entry: fall back to the network */
      }
    }
    let res;
    try {
      res = await fetch(url, { signal, credentials: 'same-origin' });
    } catch (e) {
      if (signal && signal.aborted) throw abortError(signal);
      throw new BlockffnError(
        'Network',
        `cannot download ${url} (${e && e.message ? e.message : e}); check the connection, the URL and, for another ` +
          'origin, that the server sends CORS headers',
        { cause: e },
      );
    }
    if (res.status === 404 || res.status === 410) {
      throw new BlockffnError(
        'ModelNotFound',
        name === MANIFEST
          ? `no model at ${this.id}: ${url} returned ${res.status}. The URL must point at a directory made by ` +
            '`blockffn convert` (it holds manifest.json, config.json, model.safetensors, tokenizer.json)'
          : `${url} returned ${res.status} although manifest.json lists it; upload every file of the converted model`,
      );
    }
    if (!res.ok || !res.body) {
      throw new BlockffnError('Network', `cannot download ${url}: the server answered ${res.status} ${res.statusText}`);
    }
    const discard = () => res.body.cancel().catch(() => {});
    return { chunks: readStream(res.body, signal, url), size: declaredSize(res), fromCache: false, discard };
  }
}

class FileSource {
  constructor(files) {
    this.files = new Map();
    for (const f of files) {
      if (!f || typeof f.name !== 'string' || typeof f.stream !== 'function') {
        throw new BlockffnError('InvalidInput', 'load() takes a URL string, a FileList, or an array of File objects');
      }
      const name = f.name.split(/[\\/]/).pop();
      this.files.set(name, f);
    }
    const m = this.files.get(MANIFEST);
    this.id = `files:${m ? m.name : ''}`;
  }
  async open(name, signal) {
    const f = this.files.get(name);
    if (!f) {
      throw new BlockffnError(
        'ModelNotFound',
        name === MANIFEST
          ? 'the picked files have no manifest.json; pick every file of a model directory converted with `blockffn convert`'
          : `${name} is listed in manifest.json but was not picked; pick every file of the model directory`,
      );
    }
    const size = typeof f.size === 'number' ? f.size : undefined;
    return { chunks: readStream(f.stream(), signal, name), size, fromCache: false, discard: () => {} };
  }
}

/** Node only: a local directory, or its manifest.json (path or file: URL). */
class NodeDirSource {
  constructor(dir) {
    this.dir = dir;
    this.id = String(dir);
  }
  async directory() {
    const path = await nodeImport('node:path');
    const dir = this.dir instanceof URL ? (await nodeImport('node:url')).fileURLToPath(this.dir) : this.dir;
    // As for URLs: the path of the manifest names its directory.
    return path.basename(dir) === MANIFEST ? path.dirname(dir) : dir;
  }
  async open(name, signal) {
    const fs = await nodeImport('node:fs/promises');
    const path = await nodeImport('node:path');
    const dir = await this.directory();
    const p = path.join(dir, name);
    let fh;
    try {
      // Non-blocking, so that opening a FIFO returns at once (it is refused below, by fstat).
      fh = await fs.open(p, fs.constants.O_RDONLY | (fs.constants.O_NONBLOCK ?? 0));
    } catch (e) {
      if (e && e.code === 'ENOENT') {
        throw new BlockffnError(
          'ModelNotFound',
          name === MANIFEST
            ? `no model at ${dir}: ${p} does not exist; pass a directory made by \`blockffn convert\``
            : `${p} does not exist although manifest.json lists it; convert the model again`,
          { cause: e },
        );
      }
      throw new BlockffnError('ModelNotFound', `cannot read ${p}: ${e.message}`, { cause: e });
    }
    let stat;
    try {
      stat = await fh.stat();
    } catch (e) {
      await fh.close();
      throw new BlockffnError('ModelNotFound', `cannot read ${p}: ${e.message}`, { cause: e });
    }
    if (!stat.isFile()) {
      // A FIFO would block forever, a device (/dev/zero) never end.
      await fh.close();
      throw new BlockffnError(
        'ModelNotFound',
        `${p} is not a regular file (a directory, FIFO or device); a model directory holds the files \`blockffn convert\` wrote`,
      );
    }
    async function* chunks() {
      try {
        for (;;) {
          throwIfAborted(signal);
          const buf = new Uint8Array(NODE_READ_CHUNK);
          const { bytesRead } = await fh.read(buf, 0, buf.length, null);
          if (bytesRead === 0) return;
          yield bytesRead === buf.length ? buf : buf.subarray(0, bytesRead);
        }
      } finally {
        await fh.close();
      }
    }
    return { chunks: chunks(), size: stat.size, fromCache: false, discard: () => fh.close().catch(() => {}) };
  }
}

function isFileList(x) {
  return (
    (typeof FileList !== 'undefined' && x instanceof FileList) ||
    (Array.isArray(x) && x.length > 0 && x.every((f) => f && typeof f.stream === 'function'))
  );
}

async function makeSource(source, cacheWanted) {
  if (isFileList(source)) return new FileSource(Array.from(source));
  if (source instanceof URL || typeof source === 'string') {
    const s = String(source);
    if (s === '') throw new BlockffnError('InvalidInput', 'load() needs a model URL or the picked model files');
    const isUrl = /^[a-z][a-z0-9+.-]*:/i.test(s) && !/^[a-z]:[\\/]/i.test(s);
    if (isNode && (s.startsWith('file:') || !isUrl)) {
      return new NodeDirSource(s.startsWith('file:') ? new URL(s) : s);
    }
    const cache = cacheWanted && hasCacheApi() ? await caches.open(CACHE_NAME).catch(() => null) : null;
    return new UrlSource(s, cache);
  }
  throw new BlockffnError('InvalidInput', 'load() takes a URL string, a FileList, or an array of File objects');
}

// ---------------------------------------------------------------------------------------------
// Cache helpers (exported through the package)

export async function hasModelInCache(url) {
  if (!hasCacheApi()) return false;
  const base = modelBaseUrl(url);
  const cache = await caches.open(CACHE_NAME);
  const m = await cache.match(fileUrl(base, MANIFEST));
  if (!m) return false;
  let manifest;
  try {
    manifest = JSON.parse(await m.text());
  } catch {
    return false;
  }
  for (const name of WANTED) {
    if (manifest.files && manifest.files[name] && !(await cache.match(fileUrl(base, name)))) return false;
  }
  return true;
}

export async function deleteModelFromCache(url) {
  if (!hasCacheApi()) return false;
  const base = modelBaseUrl(url);
  const cache = await caches.open(CACHE_NAME);
  let any = false;
  for (const name of [MANIFEST, ...WANTED]) any = (await cache.delete(fileUrl(base, name))) || any;
  return any;
}

// ---------------------------------------------------------------------------------------------
// Loading

function concat(parts, n) {
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.byteLength;
  }
  return out;
}

function sizeMismatch(name, got, want) {
  return new BlockffnError(
    'IntegrityMismatch',
    `${name} is ${got} bytes but manifest.json records ${want}; the file is truncated or replaced — download or convert it again`,
  );
}

function largerThanRecorded(name, want) {
  return new BlockffnError(
    'IntegrityMismatch',
    `${name} is larger than the ${want} bytes manifest.json records; the file is replaced or corrupted — download or convert it again`,
  );
}

function manifestTooLarge() {
  return new BlockffnError(
    'InvalidCheckpoint',
    `manifest.json is larger than ${fmtBytes(MAX_MANIFEST_BYTES)}, so it is not a manifest written by \`blockffn convert\` ` +
      '(those are under 1 KB); check the model URL or path',
  );
}

function hashMismatch(name, got, want) {
  return new BlockffnError(
    'IntegrityMismatch',
    `${name} has sha256 ${got} but manifest.json records ${want}; the file is corrupted — download or convert it again`,
  );
}

/**
 * A small file, whole, into JS memory: exactly `expected` bytes when the manifest records a size
 * (the real size is compared first when the source knows it), and never more than `limit`.
 */
async function readSmall(file, name, { expected, limit, tooLarge, onBytes }) {
  if (file.size !== undefined && (expected !== undefined ? file.size !== expected : file.size > limit)) {
    await file.discard();
    throw expected !== undefined ? sizeMismatch(name, file.size, expected) : tooLarge();
  }
  const parts = [];
  let n = 0;
  for await (const c of file.chunks) {
    n += c.byteLength;
    if (expected !== undefined && n > expected) throw largerThanRecorded(name, expected);
    if (n > limit) throw tooLarge();
    parts.push(c);
    onBytes && onBytes(c.byteLength);
  }
  if (expected !== undefined && n !== expected) throw sizeMismatch(name, n, expected);
  return concat(parts, n);
}

function allocateWeights(wasm, n) {
  try {
    return { buffer: new wasm.WeightBuffer(n), epoch: wasmEpoch() };
  } catch (e) {
    throw toBlockffnError(e, `cannot hold ${fmtBytes(n)} of weights in WebAssembly memory`);
  }
}

/**
 * Frees a weight buffer without ever throwing over the error that ends a load: a trap may have
 * left it borrowed, and one of a replaced instance must not be freed at all (its pointer would
 * free memory of the new instance).
 */
function freeWeights(w) {
  if (!w || w.epoch !== wasmEpoch()) return;
  try {
    w.buffer.free();
  } catch {
    /* left borrowed by a trap: the instance is restarted by the engine */
  }
}

// wasm-bindgen copies a write()'s chunk into wasm memory (a temporary allocation) before Rust sees
// it. Network chunks come in whatever sizes the transport picks, so one large chunk could grow wasm
// memory for good; pieces of a fixed size always fit the block the previous piece freed.
const WRITE_PIECE = 64 * 1024;

function writePieces(buffer, offset, chunk) {
  for (let at = 0; at < chunk.byteLength; at += WRITE_PIECE) {
    buffer.write(offset + at, chunk.subarray(at, Math.min(at + WRITE_PIECE, chunk.byteLength)));
  }
}

/**
 * Streams model.safetensors into a WeightBuffer of the manifest's size, hashed as it arrives. The
 * buffer is allocated on evidence only: at once when the source's real size equals the manifest's;
 * when the real size is unknown, once half the recorded bytes have arrived (held in JS memory until
 * then), so a manifest claiming 1.9 GiB for a 0.5 MB file never grows wasm memory. Freed on failure.
 */
async function readWeights(wasm, file, recorded, onBytes) {
  if (file.size !== undefined && file.size !== recorded) {
    await file.discard();
    throw sizeMismatch(WEIGHTS, file.size, recorded);
  }
  let w = null;
  let written = 0;
  let staged = [];
  let stagedBytes = 0;
  const allocate = () => {
    w = allocateWeights(wasm, recorded);
    for (const c of staged) {
      writePieces(w.buffer, written, c);
      written += c.byteLength;
    }
    staged = [];
    stagedBytes = 0;
  };
  let reading = false;
  try {
    if (file.size !== undefined) allocate();
    reading = true;
    for await (const c of file.chunks) {
      if (written + stagedBytes + c.byteLength > recorded) throw sizeMismatch(WEIGHTS, `more than ${recorded}`, recorded);
      if (w) {
        writePieces(w.buffer, written, c);
        written += c.byteLength;
      } else {
        staged.push(c);
        stagedBytes += c.byteLength;
        if (2 * stagedBytes >= recorded) allocate();
      }
      onBytes(c.byteLength);
    }
    if (written + stagedBytes !== recorded) throw sizeMismatch(WEIGHTS, written + stagedBytes, recorded);
    if (!w) allocate();
    return w;
  } catch (e) {
    if (!reading) await file.discard();
    freeWeights(w);
    throw e;
  }
}

/** Refuses a package whose recorded sizes cannot be right, before anything else is read. */
function checkRecordedSizes(names, sizes, dtype, maxBytes) {
  for (const n of names) {
    if (n !== WEIGHTS && sizes[n] > MAX_SMALL_FILE_BYTES) {
      throw new BlockffnError(
        'InvalidCheckpoint',
        `manifest.json records ${sizes[n]} bytes for ${n}, more than the ${fmtBytes(MAX_SMALL_FILE_BYTES)} such a file can ` +
          'be; the manifest is corrupted or not written by `blockffn convert`',
      );
    }
  }
  // Memory: refuse before allocating anything when the weights cannot fit in wasm32.
  const weightBytes = sizes[WEIGHTS];
  const smallBytes = names.filter((n) => n !== WEIGHTS).reduce((a, n) => a + sizes[n], 0);
  const need = weightBytes + 4 * smallBytes + RESERVE_BYTES;
  const f16Hint = dtype === 'f32' ? ', or convert this one with a smaller `blockffn convert --dtype` (f16 halves it)' : '';
  if (!Number.isSafeInteger(weightBytes) || weightBytes > WASM32_MAX_BUFFER - 8) {
    throw new BlockffnError(
      'OutOfMemory',
      `${WEIGHTS} is ${fmtBytes(weightBytes)} (${dtype}), more than the single ${fmtBytes(2 ** 31)} buffer WebAssembly ` +
        `(wasm32) can allocate for it. Use a smaller model${f16Hint}`,
    );
  }
  if (need > maxBytes) {
    throw new BlockffnError(
      'OutOfMemory',
      `${WEIGHTS} is ${fmtBytes(weightBytes)} (${dtype}); with the engine's working memory it needs about ` +
        `${fmtBytes(need)}, more than the ${fmtBytes(maxBytes)} WebAssembly (wasm32) can address. Use a smaller ` +
        `model${f16Hint}`,
    );
  }
}

/**
 * Loads a model package into a wasm Engine.
 * @param {typeof import('../pkg/blockffn.js')} wasm initialised bindings
 * @param {{ onProgress?: Function, signal?: AbortSignal, cache?: boolean, dtype?: string, maxMemoryBytes?: number }} options
 *   already checked by the engine
 * @returns {Promise<{ engine: any, id: string, manifest: any, config: any, tokenizerConfig: any,
 *   fromCache: boolean, cached: boolean, warnings: string[] }>}
 */
export async function loadModel(wasm, source, options = {}) {
  const { onProgress, signal } = options;
  const maxBytes = options.maxMemoryBytes ?? WASM32_MAX_BYTES;
  const emit = (ev) => {
    if (onProgress) {
      try {
        onProgress(ev);
      } catch {
        /* a throwing callback must not break loading */
      }
    }
  };
  throwIfAborted(signal);
  const src = await makeSource(source, options.cache !== false);
  const warnings = [];

  // manifest.json (tiny; not counted in the byte totals)
  const mfile = await src.open(MANIFEST, signal);
  const manifestBytes = await readSmall(mfile, MANIFEST, { limit: MAX_MANIFEST_BYTES, tooLarge: manifestTooLarge });
  const manifestText = new TextDecoder().decode(manifestBytes);
  let manifest;
  try {
    manifest = wasm.parseManifest(manifestText);
  } catch (e) {
    throw toBlockffnError(e, `${src.id}${MANIFEST}`);
  }
  const dtype = manifest.dtype;
  if (options.dtype && options.dtype !== 'auto' && options.dtype !== dtype) {
    throw new BlockffnError(
      'InvalidConfig',
      `this package holds ${dtype} weights but dtype "${options.dtype}" was requested; load a package converted with ` +
        `\`blockffn convert --dtype ${options.dtype}\`, or omit dtype`,
    );
  }
  const heads = DRAFT_HEAD.filter((n) => manifest.files[n]);
  if (heads.length === 1) {
    throw new BlockffnError(
      'InvalidCheckpoint',
      `manifest.json lists ${heads[0]} without ${DRAFT_HEAD.find((n) => n !== heads[0])}: a draft head needs both files`,
    );
  }
  // Picked files without the optional draft head load without it (said in the warnings).
  const notPicked = heads.length && src instanceof FileSource && !heads.every((n) => src.files.has(n));
  if (notPicked && options.draftHead !== false) {
    warnings.push('the draft head (eagle.json, eagle.safetensors) was not picked: speculative \'eagle\' is unavailable');
  }
  const skipHead = options.draftHead === false || notPicked;
  const names = WANTED.filter((n) => manifest.files[n] && !(skipHead && DRAFT_HEAD.includes(n)));
  const sizes = Object.fromEntries(names.map((n) => [n, Number(manifest.files[n].size)]));
  const weightBytes = sizes[WEIGHTS];
  checkRecordedSizes(names, sizes, dtype, maxBytes);

  const total = names.reduce((a, n) => a + sizes[n], 0);
  let loaded = 0;
  let lastEmit = -1;
  let allFromCache = true;
  const step = Math.max(64 * 1024, Math.floor(total / 200));
  const progress = (file, force = false, fromCache = false) => {
    if (force || loaded - lastEmit >= step) {
      lastEmit = loaded;
      emit({ phase: 'download', file, loaded, total, progress: total ? loaded / total : 1, fromCache });
    }
  };
  emit({ phase: 'download', file: MANIFEST, loaded: 0, total, progress: 0, fromCache: mfile.fromCache });

  const small = {};
  let weights = null;
  try {
    for (const name of names.filter((n) => n !== WEIGHTS)) {
      const f = await src.open(name, signal);
      allFromCache = allFromCache && f.fromCache;
      const onBytes = (n) => {
        loaded += n;
        progress(name, false, f.fromCache);
      };
      small[name] = await readSmall(f, name, {
        expected: sizes[name],
        limit: MAX_SMALL_FILE_BYTES,
        tooLarge: () => largerThanRecorded(name, sizes[name]),
        onBytes,
      });
      progress(name, true, f.fromCache);
    }

    // Weights: straight into wasm memory, hashed as they arrive.
    const wf = await src.open(WEIGHTS, signal);
    allFromCache = allFromCache && wf.fromCache;
    weights = await readWeights(wasm, wf, weightBytes, (n) => {
      loaded += n;
      progress(WEIGHTS, false, wf.fromCache);
    });
    const wb = weights.buffer;
    progress(WEIGHTS, true, wf.fromCache);
    throwIfAborted(signal);

    // Verify every file against the manifest (sizes are exact already).
    const checked = [];
    for (const name of names) {
      const got = name === WEIGHTS ? wb.sha256() : wasm.sha256Hex(small[name]);
      if (got !== manifest.files[name].sha256) {
        if (src.cache && allFromCache) {
          // A damaged cache entry: drop it so the next load downloads again.
          await deleteModelFromCache(src.id).catch(() => {});
        }
        throw hashMismatch(name, got, manifest.files[name].sha256);
      }
      checked.push(name);
      emit({ phase: 'verify', file: name, verified: checked.length, total: names.length, progress: checked.length / names.length });
    }
    throwIfAborted(signal);

    // Store verified files (manifest last, so a complete manifest means a complete entry).
    let cached = false;
    if (src.cache) {
      if (allFromCache) {
        cached = true;
      } else {
        try {
          emit({ phase: 'verify', file: null, text: 'storing in the browser cache', progress: 1 });
          for (const name of names) {
            const url = fileUrl(src.base, name);
            const body = name === WEIGHTS ? weightStream(wb) : small[name];
            await src.cache.put(url, new Response(body, { headers: { 'Content-Length': String(sizes[name]) } }));
          }
          await src.cache.put(fileUrl(src.base, MANIFEST), new Response(manifestBytes));
          cached = true;
        } catch (e) {
          await deleteModelFromCache(src.id).catch(() => {});
          const quota = e && (e.name === 'QuotaExceededError' || /quota/i.test(String(e.message)));
          warnings.push(
            quota
              ? 'the browser storage quota is exceeded: the model is kept in memory only and will be downloaded again next time'
              : `the model could not be stored in the browser cache (${e && e.message}); it is kept in memory only`,
          );
        }
      }
    }
    throwIfAborted(signal);

    emit({ phase: 'parse', progress: 0 });
    const configText = new TextDecoder().decode(small['config.json']);
    let engine;
    try {
      engine = options.gpu
        ? wasm.Engine.onGpu(configText, wb, small['tokenizer.json'] ?? null, undefined, options.gpu, !!options.gpuFallback)
        : new wasm.Engine(configText, wb, small['tokenizer.json'] ?? null);
    } catch (e) {
      throw toBlockffnError(e, src.id);
    }
    if (small['eagle.safetensors']) {
      try {
        attachDraftHead(wasm, engine, small['eagle.json'], small['eagle.safetensors']);
      } catch (e) {
        engine.free();
        throw toBlockffnError(e, src.id);
      }
    }
    let tokenizerConfig = null;
    if (small['tokenizer_config.json']) {
      try {
        tokenizerConfig = JSON.parse(new TextDecoder().decode(small['tokenizer_config.json']));
      } catch {
        warnings.push('tokenizer_config.json is not valid JSON; using the default chat template');
      }
    }
    return {
      engine,
      epoch: weights.epoch,
      id: src.id,
      manifest,
      config: JSON.parse(configText),
      tokenizerConfig,
      fromCache: allFromCache && !!src.cache,
      cached,
      warnings,
      emit,
    };
  } catch (e) {
    throw toBlockffnError(e);
  } finally {
    // The engine took the bytes; this frees the (now empty) buffer, or the full one after a failure.
    freeWeights(weights);
  }
}

/** Gives the engine the package's draft head (its weights copied into wasm memory once). */
function attachDraftHead(wasm, engine, configBytes, weightBytes) {
  const buf = new wasm.WeightBuffer(weightBytes.byteLength);
  try {
    writePieces(buf, 0, weightBytes);
    engine.setDraftHead(new TextDecoder().decode(configBytes), buf);
  } finally {
    buf.free();
  }
}

/** A stream over the weights in wasm memory, one bounded chunk at a time (never a second full copy). */
function weightStream(wb) {
  let off = 0;
  const len = wb.length;
  return new ReadableStream({
    pull(controller) {
      if (off >= len) {
        controller.close();
        return;
      }
      const n = Math.min(CACHE_WRITE_CHUNK, len - off);
      controller.enqueue(wb.read(off, n));
      off += n;
    },
  });
}
