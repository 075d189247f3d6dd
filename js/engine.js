// The in-thread engine. The worker transport runs this same class inside a Web Worker, so both
// transports share one implementation and one interface.

import { createChatCompletion, detectChatTemplate } from './chat.js';
import { BlockffnError, abortError, throwIfAborted, toBlockffnError } from './errors.js';
import { loadModel } from './loader.js';
import { checkOptionNames, checkSignal, describe, optBoolean, optFunction, optNumber } from './options.js';
import { loadWasm, restartWasm, trapOf, wasmBackend, wasmEpoch, wasmMemoryBytes } from './wasm.js';

const now = () => (typeof performance !== 'undefined' ? performance.now() : Date.now());

// A macrotask yield between tokens: lets abort signals, timers and messages run.
let channel = null;
const waiting = [];
function yieldToEventLoop() {
  if (typeof setImmediate === 'function') return new Promise((r) => setImmediate(r));
  if (typeof MessageChannel === 'function') {
    if (!channel) {
      channel = new MessageChannel();
      channel.port1.onmessage = () => waiting.shift()();
    }
    return new Promise((r) => {
      waiting.push(r);
      channel.port2.postMessage(0);
    });
  }
  return new Promise((r) => setTimeout(r, 0));
}

const GENERATE_OPTIONS = [
  'maxTokens', 'temperature', 'topK', 'topP', 'repetitionPenalty', 'seed', 'stop', 'ignoreEos', 'signal', 'mode',
  'speculative', 'draftLen', 'draftTree',
];

/** `speculative` as the wasm side takes it: 'off', 'ngram', 'eagle' or 'auto'. */
function speculativeOption(v) {
  if (v === undefined || v === false || v === 'off') return 'off';
  if (v === 'auto' || v === 'ngram' || v === 'eagle') return v;
  throw new BlockffnError('InvalidInput', `speculative must be 'auto', 'ngram', 'eagle' or false, got ${describe(v)}`);
}
const LOAD_OPTIONS = ['onProgress', 'signal', 'cache', 'dtype', 'maxMemoryBytes', 'backend', 'draftHead'];
const BACKENDS = ['auto', 'webgpu', 'wasm'];
/** More ids than any context holds: refused before anything is allocated for them. */
const MAX_PROMPT_IDS = 1 << 24;

/** Validated generation options → the wasm Generation's options. */
function generationOptions(options) {
  const o = checkOptionNames(options, GENERATE_OPTIONS, 'generate()');
  const mode = o.mode ?? 'sparse';
  if (mode !== 'sparse' && mode !== 'dense') {
    throw new BlockffnError('InvalidInput', `mode must be "sparse" or "dense", got ${describe(mode)}`);
  }
  let stop = o.stop ?? [];
  if (typeof stop === 'string') stop = [stop];
  if (!Array.isArray(stop) || !stop.every((s) => typeof s === 'string')) {
    throw new BlockffnError('InvalidInput', 'stop must be a string or an array of strings');
  }
  let seed = o.seed;
  if (typeof seed === 'bigint') {
    if (seed < 0n || seed >= 2n ** 64n) throw new BlockffnError('InvalidInput', 'seed must fit in 64 bits (>= 0)');
  } else {
    seed = optNumber(o, 'seed', { min: 0, integer: true });
  }
  return {
    wasm: {
      maxTokens: optNumber(o, 'maxTokens', { min: 0, integer: true }),
      temperature: optNumber(o, 'temperature', { min: 0 }),
      topK: optNumber(o, 'topK', { min: 1, integer: true }),
      topP: optNumber(o, 'topP', { min: 0, max: 1, exclusiveMin: true }),
      repetitionPenalty: optNumber(o, 'repetitionPenalty', { min: 0, exclusiveMin: true }),
      seed,
      dense: mode === 'dense',
      ignoreEos: optBoolean(o, 'ignoreEos') ?? false,
      speculative: speculativeOption(o.speculative),
      draftLen: o.draftLen === 'auto' ? undefined : optNumber(o, 'draftLen', { min: 1, max: 15, integer: true }),
      draftTree: optNumber(o, 'draftTree', { min: 0, max: 3, integer: true }),
    },
    stop,
    signal: checkSignal(o.signal),
  };
}

/** Validated load() options (the loader reads them as they are). */
function loadOptions(options) {
  const o = checkOptionNames(options, LOAD_OPTIONS, 'load()');
  optFunction(o, 'onProgress');
  optBoolean(o, 'cache');
  optBoolean(o, 'draftHead');
  if (o.dtype !== undefined && typeof o.dtype !== 'string') {
    throw new BlockffnError('InvalidInput', `dtype must be a string such as 'auto', 'f16' or 'q8', got ${describe(o.dtype)}`);
  }
  optNumber(o, 'maxMemoryBytes', { min: 0, exclusiveMin: true });
  if (o.backend !== undefined) checkBackend(o.backend);
  return { ...o, signal: checkSignal(o.signal) };
}

/** `backend` as given, or an `InvalidInput` error naming the valid ones. */
export function checkBackend(backend) {
  if (!BACKENDS.includes(backend)) {
    throw new BlockffnError('InvalidInput', `backend must be 'auto', 'webgpu' or 'wasm', got ${describe(backend)}`);
  }
  return backend;
}

/**
 * A WebGPU device for `want` ('auto' | 'webgpu'), or why there is none. 'webgpu' rejects with
 * `Unsupported` where 'auto' falls back to wasm: no WebGPU in this build or environment, no
 * adapter, or (auto only) a software adapter, which is slower than the wasm kernels.
 */
async function acquireGpu(wasm, want) {
  if (want === 'wasm') return { device: null, info: null, reason: "backend 'wasm' was requested" };
  const none = (why) => {
    if (want === 'webgpu') {
      throw new BlockffnError('Unsupported', `WebGPU is not usable here: ${why}; load with backend: 'wasm' or 'auto'`);
    }
    return { device: null, info: null, reason: `WebGPU is not used: ${why}` };
  };
  if (typeof wasm.requestGpu !== 'function') return none('this build of the package has no WebGPU backend');
  if (typeof navigator === 'undefined' || !navigator.gpu) {
    return none('navigator.gpu is missing (the browser has no WebGPU, or it is disabled)');
  }
  let device;
  try {
    device = await wasm.requestGpu();
  } catch (e) {
    return none(toBlockffnError(e).message);
  }
  const info = device.info;
  if (want === 'auto' && info.software) {
    device.free();
    return none(`the only WebGPU adapter is a software renderer${info.name ? ` (${info.name})` : ''}, slower than the wasm kernels`);
  }
  return { device, info, reason: want === 'webgpu' ? "backend 'webgpu' was requested" : 'a WebGPU adapter is available and the model fits its limits' };
}

/**
 * The BlockffnError for what a call into wasm threw. A trap (a Rust panic, a failed allocation
 * inside Rust) also restarts the wasm instance, which drops every model of this thread; see
 * restartWasm for why a trapped instance is not used again.
 */
function wasmFailure(e, context = '') {
  const trap = trapOf(e);
  if (!trap) return toBlockffnError(e, context);
  if (!restartWasm(trap)) return toBlockffnError(e, context); // restarted for this trap already
  return new BlockffnError(
    'Internal',
    `${context ? `${context}: ` : ''}the WebAssembly engine trapped (${trap.message}); it was restarted, which unloaded ` +
      'the model — load it again. This is a bug: please report it',
    { cause: trap },
  );
}

function restartedError() {
  return new BlockffnError(
    'Internal',
    'the model was unloaded: the WebAssembly engine trapped in another call and was restarted; load the model again',
  );
}

/** Frees a wasm object of `epoch` without throwing: a trap may have left it borrowed. */
function freeQuietly(obj, epoch) {
  // An object of a replaced instance must never be freed: its pointer would free memory of the new one.
  if (!obj || epoch !== wasmEpoch()) return;
  try {
    obj.free();
  } catch (e) {
    if (trapOf(e)) restartWasm(trapOf(e));
  }
}

/** Abort reasons of a load that something else ended. */
const supersededError = () => new BlockffnError('Aborted', 'the load was aborted: a newer load() replaced it before it finished');
const unloadedError = () => new BlockffnError('Aborted', 'the load was aborted: unload() was called before it finished');

/** An AbortController that also aborts when `outer` does. */
function linkedController(outer) {
  const ctrl = new AbortController();
  if (!outer) return { ctrl, unlink: () => {} };
  const onAbort = () => ctrl.abort(outer.reason);
  if (outer.aborted) onAbort();
  else outer.addEventListener('abort', onAbort, { once: true });
  return { ctrl, unlink: () => outer.removeEventListener('abort', onAbort) };
}

export class LocalEngine {
  /**
   * @param {{ wasm?: any, simd?: 'auto' | 'relaxed' | 'baseline' }} [options] `wasm`: where to load
   * the .wasm from (URL, bytes, Module); `simd`: which packaged build to pick when `wasm` is not given.
   */
  constructor(options = {}) {
    this._wasmInput = options.wasm;
    this._simd = options.simd ?? 'auto';
    this._backend = checkBackend(options.backend ?? 'auto');
    this._lastBackend = null; // { requested, reason, gpu } of the last load
    this._noGpu = null; // why 'auto' found no usable WebGPU adapter, once it looked
    this._model = null; // { engine, epoch, info }
    /** Loads not settled yet: { ctrl, settled }. A newer load() or unload() aborts them all. */
    this._loads = new Set();
    this.chat = { completions: { create: (req) => createChatCompletion(this, req) } };
  }

  /** Initialises the wasm module (also done lazily by every call). */
  async init() {
    return loadWasm(this._wasmInput, this._simd);
  }

  /**
   * Loads a model, replacing the one loaded (freed first: two models may not fit in wasm memory).
   * A newer load() or an unload() aborts this one, so a stalled download never blocks the engine.
   */
  async load(source, options = {}) {
    const o = loadOptions(options);
    throwIfAborted(o.signal);
    const earlier = this._abortLoads(supersededError);
    const { ctrl, unlink } = linkedController(o.signal);
    const entry = { ctrl, settled: null };
    this._loads.add(entry);
    const run = (async () => {
      await earlier; // what the aborted loads allocated is freed
      throwIfAborted(ctrl.signal);
      const wasm = await this.init();
      throwIfAborted(ctrl.signal);
      return this._loadNow(wasm, source, { ...o, signal: ctrl.signal });
    })();
    entry.settled = run.then(
      () => {},
      () => {},
    );
    try {
      return await run;
    } catch (e) {
      throw toBlockffnError(e);
    } finally {
      this._loads.delete(entry);
      unlink();
    }
  }

  /** Aborts every unsettled load with `reason()`; resolves when they have all settled. */
  _abortLoads(reason) {
    const settled = [];
    for (const l of this._loads) {
      if (!l.ctrl.signal.aborted) l.ctrl.abort(reason());
      settled.push(l.settled);
    }
    return Promise.all(settled);
  }

  async _loadNow(wasm, source, options) {
    this._freeModel();
    const requested = options.backend ?? this._backend;
    // 'auto' asks the browser once: without a (hardware) adapter, later loads go straight to wasm.
    const gpu = requested === 'auto' && this._noGpu ? { ...this._noGpu } : await acquireGpu(wasm, requested);
    if (requested === 'auto' && !gpu.device) this._noGpu = { ...gpu };
    let r;
    try {
      r = await loadModel(wasm, source, { ...options, gpu: gpu.device, gpuFallback: requested === 'auto' });
    } catch (e) {
      throw wasmFailure(e);
    } finally {
      const fellBack = gpu.device && gpu.device.fallback;
      if (fellBack) gpu.reason = `WebGPU is not used: ${fellBack}`;
      if (gpu.device) freeQuietly(gpu.device, wasmEpoch());
    }
    const onGpu = r.engine.backend === 'webgpu';
    this._lastBackend = { requested, reason: gpu.reason, gpu: gpu.info };
    if (options.signal.aborted) {
      // unload() or a newer load() came during the last step.
      freeQuietly(r.engine, r.epoch);
      throw abortError(options.signal);
    }
    let summary;
    try {
      summary = r.engine.summary();
    } catch (e) {
      freeQuietly(r.engine, r.epoch);
      throw wasmFailure(e);
    }
    const tpl = detectChatTemplate(r.tokenizerConfig);
    this._model = {
      engine: r.engine,
      epoch: r.epoch,
      info: {
        id: r.id,
        backend: onGpu ? 'webgpu' : wasmBackend(),
        backendReason: gpu.reason,
        gpu: gpu.info,
        dtype: r.manifest.dtype,
        params: summary.params,
        weightBytes: summary.weightBytes,
        vocabSize: summary.vocabSize,
        hiddenSize: summary.hiddenSize,
        numLayers: summary.numLayers,
        numAttentionHeads: summary.numAttentionHeads,
        contextLength: summary.contextLength,
        attention: summary.attention,
        ffn: summary.ffn,
        experts: { count: summary.numExperts, size: summary.expertSize, wordsPerLayer: summary.wordsPerLayer },
        bosTokenId: summary.bosTokenId ?? null,
        eosTokenId: summary.eosTokenId ?? null,
        hasTokenizer: summary.hasTokenizer,
        draftHead: summary.draftHeadParams ? { params: summary.draftHeadParams } : null,
        chatTemplate: tpl.name,
        chatTemplateFallback: tpl.fallback,
        fromCache: r.fromCache,
        cached: r.cached,
        warnings: r.warnings,
        config: r.config,
      },
    };
    r.emit({ phase: 'parse', progress: 1 });
    r.emit({ phase: 'ready', progress: 1, fromCache: r.fromCache });
    return structuredClone(this._model.info);
  }

  _require() {
    const m = this._model;
    if (m && m.epoch !== wasmEpoch()) {
      this._model = null;
      throw restartedError();
    }
    if (!m) {
      throw new BlockffnError('InvalidInput', 'no model is loaded; call engine.load(url) first');
    }
    return m;
  }

  async modelInfo() {
    const m = this._require();
    return structuredClone(m.info);
  }

  /** Runtime facts: backend, wasm memory in use, whether the page is cross-origin isolated. */
  async runtimeInfo() {
    await this.init().catch(() => {});
    const m = this._model && this._model.epoch === wasmEpoch() ? this._model : null;
    const last = this._lastBackend;
    return {
      backend: m ? m.info.backend : (wasmBackend() ?? 'wasm-simd128'),
      requestedBackend: last ? last.requested : this._backend,
      backendReason: m ? m.info.backendReason : null,
      gpu: m ? m.info.gpu : null,
      wasmBackend: wasmBackend() ?? 'wasm-simd128',
      wasmMemoryBytes: wasmMemoryBytes(),
      crossOriginIsolated: typeof crossOriginIsolated !== 'undefined' ? !!crossOriginIsolated : false,
      modelLoaded: !!this._model && this._model.epoch === wasmEpoch(),
    };
  }

  /** Ids of `text` (a string, or a segmented prompt `{ segments }`), BOS first unless `addBos: false`. */
  async tokenize(text, options = {}) {
    const o = checkOptionNames(options, ['addBos'], 'tokenize()');
    const addBos = optBoolean(o, 'addBos') ?? true;
    const m = this._require();
    const segments = isSegmentedPrompt(text) ? checkSegments(text.segments, 'tokenize()') : null;
    if (typeof text !== 'string' && !segments) {
      throw new BlockffnError('InvalidInput', `tokenize() takes a string or { segments }, got ${describe(text)}`);
    }
    try {
      const ids = segments
        ? m.engine.tokenizeSegments(segments, addBos)
        : addBos
          ? m.engine.tokenize(text)
          : m.engine.tokenizePlain(text);
      return Array.from(ids);
    } catch (e) {
      throw wasmFailure(e);
    }
  }

  async detokenize(ids) {
    const m = this._require();
    const list = toIds(ids, 'detokenize()');
    try {
      return m.engine.detokenize(list);
    } catch (e) {
      throw wasmFailure(e);
    }
  }

  /**
   * Logits of every position of `ids` (a fresh context each call), flattened positions × vocab.
   * @returns {Promise<Float32Array>}
   */
  async logits(ids, options = {}) {
    const o = checkOptionNames(options, ['mode'], 'logits()');
    const mode = o.mode ?? 'sparse';
    if (mode !== 'sparse' && mode !== 'dense') {
      throw new BlockffnError('InvalidInput', `mode must be "sparse" or "dense", got ${describe(mode)}`);
    }
    const m = this._require();
    const list = toIds(ids, 'logits()');
    try {
      return await m.engine.logitsAsync(list, mode === 'dense');
    } catch (e) {
      throw wasmFailure(e);
    }
  }

  /** Frees the model; a load() in progress is aborted first (it ends with `Aborted`). */
  async unload() {
    await this._abortLoads(unloadedError);
    this._freeModel();
  }

  _freeModel() {
    const m = this._model;
    this._model = null;
    if (m) freeQuietly(m.engine, m.epoch); // running generations keep their own reference to the model
  }

  /**
   * Streams tokens after `prompt` (text, an array of token ids used as given, or a segmented
   * prompt `{ segments }` whose text never becomes control tokens).
   * @returns {AsyncGenerator<{ text: string, tokenIds: number[], experts: Uint32Array[], stats: object, finishReason?: string }>}
   */
  generate(prompt, options = {}) {
    return this._generate(prompt, options);
  }

  async *_generate(prompt, options) {
    const m = this._require();
    const o = generationOptions(options);
    throwIfAborted(o.signal);
    const epoch = m.epoch;
    let gen;
    let stopIds = [];
    try {
      const ids = promptIds(m.engine, prompt);
      for (const s of o.stop) {
        const id = m.engine.singleTokenId(s);
        if (id !== undefined) stopIds.push(id);
      }
      // Stop strings are matched by the engine's generation loop (text held back while it could
      // start one, cut before it); a stop string that is one token is also a stop id, since
      // special tokens never reach the text.
      gen = m.engine.generation(ids, { ...o.wasm, stopTokenIds: stopIds, stop: o.stop });
    } catch (e) {
      throw wasmFailure(e);
    }
    const t0 = now();
    let tFirst = 0;
    let n = 0;
    let nFirst = 0; // tokens of the first chunk (the prompt's forward): not decode speed
    const stats = () => {
      const t = now();
      const s = gen.stats();
      const decodeMs = tFirst ? t - tFirst : 0;
      const spec = gen.speculationTotals;
      return {
        ...s,
        ...(spec ? { speculation: spec } : {}),
        promptTokens: gen.promptTokens,
        elapsedMs: t - t0,
        prefillMs: tFirst ? tFirst - t0 : t - t0,
        tokensPerSecond: n > nFirst && decodeMs > 0 ? ((n - nFirst) * 1000) / decodeMs : n > 0 ? (n * 1000) / (t - t0) : 0,
      };
    };
    const onGpu = m.info.backend === 'webgpu';
    /** One step: the next chunk, and whether it is the last. */
    const next = async () => {
      if (wasmEpoch() !== epoch) throw restartedError();
      // A GPU step awaits its readback on the event loop; a wasm step finishes in the call.
      const more = onGpu ? await gen.stepAsync() : gen.step();
      if (more) {
        n += gen.tokens.length;
        if (tFirst === 0) {
          tFirst = now();
          nFirst = n;
        }
      }
      const text = gen.text;
      // A speculative step can emit several tokens; their masks come one after another.
      const tokenIds = more ? Array.from(gen.tokens) : [];
      const all = more ? gen.experts : new Uint32Array(0);
      const per = tokenIds.length ? all.length / tokenIds.length : 0;
      const experts = tokenIds.map((_, i) => all.slice(i * per, (i + 1) * per));
      const speculation = gen.speculation;
      const extra = speculation ? { speculation } : {};
      // A token that completes a stop string ends the stream with it.
      if (!more || gen.finishReason === 'stop') {
        return { last: true, chunk: { text, tokenIds, experts, ...extra, stats: stats(), finishReason: gen.finishReason } };
      }
      return { last: false, chunk: { text, tokenIds, experts, ...extra, stats: stats() } };
    };
    try {
      for (;;) {
        if (o.signal && o.signal.aborted) throw abortError(o.signal);
        let r;
        try {
          r = await next();
        } catch (e) {
          throw wasmFailure(e);
        }
        yield r.chunk;
        if (r.last) return;
        if (!onGpu) await yieldToEventLoop(); // the GPU step's await already yielded
      }
    } finally {
      // After a trap, free() throws (the trapped call left the generation borrowed): the error
      // the caller sees is the trap's, never free()'s.
      freeQuietly(gen, epoch);
    }
  }
}

function isSegmentedPrompt(p) {
  return !!p && typeof p === 'object' && !Array.isArray(p) && !ArrayBuffer.isView(p) && 'segments' in p;
}

/** `{ segments }`'s list as the wasm side takes it: `{ text }` or `{ control }` strings only. */
function checkSegments(segments, what) {
  if (!Array.isArray(segments)) {
    throw new BlockffnError('InvalidInput', `${what}: segments must be an array of { text } or { control }, got ${describe(segments)}`);
  }
  return segments.map((s, i) => {
    const keys = s && typeof s === 'object' ? Object.keys(s) : [];
    const key = keys.length === 1 ? keys[0] : null;
    if ((key !== 'text' && key !== 'control') || typeof s[key] !== 'string') {
      throw new BlockffnError('InvalidInput', `${what}: segments[${i}] must be { text: string } or { control: string }`);
    }
    return { [key]: s[key] };
  });
}

/** Ids of a generate() prompt: text (BOS first), a segmented prompt, or ids as given. */
function promptIds(engine, prompt) {
  if (typeof prompt === 'string') return engine.tokenize(prompt);
  if (isSegmentedPrompt(prompt)) return engine.tokenizeSegments(checkSegments(prompt.segments, 'generate()'), true);
  return toIds(prompt, 'generate()');
}

function toIds(ids, what) {
  const arrayLike = ids !== null && typeof ids === 'object' && 'length' in ids;
  if (!arrayLike) {
    const takes = what === 'generate()' ? 'a string, an array of token ids or { segments }' : 'an array of token ids';
    throw new BlockffnError('InvalidInput', `${what} takes ${takes}, got ${describe(ids)}`);
  }
  const n = ids.length;
  if (!Number.isSafeInteger(n) || n < 0) {
    throw new BlockffnError('InvalidInput', `${what}: the ids' length must be a non-negative integer, got ${describe(n)}`);
  }
  if (n > MAX_PROMPT_IDS) {
    throw new BlockffnError('InvalidInput', `${what}: ${n} ids are more than any model's context holds`);
  }
  const out = new Uint32Array(n);
  for (let i = 0; i < n; i++) {
    const v = ids[i];
    if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) {
      throw new BlockffnError('InvalidInput', `${what}: token id at position ${i} is not a non-negative integer (${describe(v)})`);
    }
    out[i] = v;
  }
  return out;
}
