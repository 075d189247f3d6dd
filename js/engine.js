// The in-thread engine. The worker transport runs this same class inside a Web Worker, so both
// transports share one implementation and one interface.

import { createChatCompletion, detectChatTemplate } from './chat.js';
import { BlockffnError, abortError, throwIfAborted, toBlockffnError } from './errors.js';
import { loadModel } from './loader.js';
import { loadWasm, wasmBackend, wasmMemoryBytes } from './wasm.js';

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

/** Holds back text that could be the start of a stop string; cuts at the first stop string. */
class StopMatcher {
  constructor(stops) {
    this.stops = stops.filter((s) => s.length > 0);
    this.held = '';
  }
  push(text, final) {
    this.held += text;
    if (this.stops.length === 0) {
      const emit = this.held;
      this.held = '';
      return { emit, stopped: false };
    }
    let cut = -1;
    for (const s of this.stops) {
      const i = this.held.indexOf(s);
      if (i >= 0 && (cut < 0 || i < cut)) cut = i;
    }
    if (cut >= 0) {
      const emit = this.held.slice(0, cut);
      this.held = '';
      return { emit, stopped: true };
    }
    let keep = 0;
    if (!final) {
      for (const s of this.stops) {
        for (let k = Math.min(s.length - 1, this.held.length); k > keep; k--) {
          if (this.held.endsWith(s.slice(0, k))) {
            keep = k;
            break;
          }
        }
      }
    }
    const emit = this.held.slice(0, this.held.length - keep);
    this.held = this.held.slice(this.held.length - keep);
    return { emit, stopped: false };
  }
}

function optNumber(o, key, { min, max, integer = false, exclusiveMin = false } = {}) {
  const v = o[key];
  if (v === undefined || v === null) return undefined;
  const bad = () =>
    new BlockffnError(
      'InvalidInput',
      `${key} must be ${integer ? 'an integer' : 'a number'}${min !== undefined ? (exclusiveMin ? ` > ${min}` : ` >= ${min}`) : ''}` +
        `${max !== undefined ? ` and <= ${max}` : ''}, got ${JSON.stringify(v)}`,
    );
  if (typeof v !== 'number' || !Number.isFinite(v)) throw bad();
  if (integer && !Number.isSafeInteger(v)) throw bad();
  if (min !== undefined && (exclusiveMin ? v <= min : v < min)) throw bad();
  if (max !== undefined && v > max) throw bad();
  return v;
}

/** Validated generation options → the wasm Generation's options. */
function generationOptions(o) {
  if (o === null || typeof o !== 'object') throw new BlockffnError('InvalidInput', 'generate() options must be an object');
  const mode = o.mode ?? 'sparse';
  if (mode !== 'sparse' && mode !== 'dense') {
    throw new BlockffnError('InvalidInput', `mode must be "sparse" or "dense", got ${JSON.stringify(mode)}`);
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
      ignoreEos: !!o.ignoreEos,
    },
    stop,
    signal: o.signal,
  };
}

export class LocalEngine {
  /**
   * @param {{ wasm?: any, simd?: 'auto' | 'relaxed' | 'baseline' }} [options] `wasm`: where to load
   * the .wasm from (URL, bytes, Module); `simd`: which packaged build to pick when `wasm` is not given.
   */
  constructor(options = {}) {
    this._wasmInput = options.wasm;
    this._simd = options.simd ?? 'auto';
    this._model = null;
    this._loading = null;
    this.chat = { completions: { create: (req) => createChatCompletion(this, req) } };
  }

  /** Initialises the wasm module (also done lazily by every call). */
  async init() {
    return loadWasm(this._wasmInput, this._simd);
  }

  async load(source, options = {}) {
    const wasm = await this.init();
    if (this._loading) {
      throw new BlockffnError('InvalidInput', 'a model is already loading; await it or abort it before loading another');
    }
    const run = (async () => {
      // The previous model goes first: two models at once may not fit in wasm memory.
      await this.unload();
      const r = await loadModel(wasm, source, options);
      const summary = r.engine.summary();
      const tpl = detectChatTemplate(r.tokenizerConfig);
      this._model = {
        engine: r.engine,
        info: {
          id: r.id,
          backend: wasmBackend(),
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
      return this.modelInfo();
    })();
    this._loading = run;
    try {
      return await run;
    } catch (e) {
      throw toBlockffnError(e);
    } finally {
      this._loading = null;
    }
  }

  _require() {
    if (!this._model) {
      throw new BlockffnError('InvalidInput', 'no model is loaded; call engine.load(url) first');
    }
    return this._model;
  }

  async modelInfo() {
    const m = this._require();
    return structuredClone(m.info);
  }

  /** Runtime facts: backend, wasm memory in use, whether the page is cross-origin isolated. */
  async runtimeInfo() {
    await this.init().catch(() => {});
    return {
      backend: wasmBackend() ?? 'wasm-simd128',
      wasmMemoryBytes: wasmMemoryBytes(),
      crossOriginIsolated: typeof crossOriginIsolated !== 'undefined' ? !!crossOriginIsolated : false,
      modelLoaded: !!this._model,
    };
  }

  async tokenize(text, options = {}) {
    const m = this._require();
    if (typeof text !== 'string') throw new BlockffnError('InvalidInput', 'tokenize() takes a string');
    try {
      const ids = options.addBos === false ? m.engine.tokenizePlain(text) : m.engine.tokenize(text);
      return Array.from(ids);
    } catch (e) {
      throw toBlockffnError(e);
    }
  }

  async detokenize(ids) {
    const m = this._require();
    try {
      return m.engine.detokenize(toIds(ids, 'detokenize()'));
    } catch (e) {
      throw toBlockffnError(e);
    }
  }

  async unload() {
    const m = this._model;
    this._model = null;
    if (m) m.engine.free(); // running generations keep their own reference to the model
  }

  /**
   * Streams tokens after `prompt` (text, or an array of token ids used as given).
   * @returns {AsyncGenerator<{ text: string, tokenIds: number[], experts: Uint32Array[], stats: object, finishReason?: string }>}
   */
  generate(prompt, options = {}) {
    return this._generate(prompt, options);
  }

  async *_generate(prompt, options) {
    const m = this._require();
    const o = generationOptions(options);
    throwIfAborted(o.signal);
    let gen;
    let stopIds = [];
    try {
      const ids = typeof prompt === 'string' ? m.engine.tokenize(prompt) : toIds(prompt, 'generate()');
      for (const s of o.stop) {
        const id = m.engine.singleTokenId(s);
        if (id !== undefined) stopIds.push(id);
      }
      gen = m.engine.generation(ids, { ...o.wasm, stopTokenIds: stopIds });
    } catch (e) {
      throw toBlockffnError(e);
    }
    const matcher = new StopMatcher(o.stop);
    const t0 = now();
    let tFirst = 0;
    let n = 0;
    const stats = () => {
      const t = now();
      const s = gen.stats();
      const decodeMs = tFirst ? t - tFirst : 0;
      return {
        ...s,
        promptTokens: gen.promptTokens,
        elapsedMs: t - t0,
        prefillMs: tFirst ? tFirst - t0 : t - t0,
        tokensPerSecond: n > 1 && decodeMs > 0 ? ((n - 1) * 1000) / decodeMs : n > 0 ? (n * 1000) / (t - t0) : 0,
      };
    };
    try {
      for (;;) {
        if (o.signal && o.signal.aborted) throw abortError(o.signal);
        let more;
        try {
          more = gen.step();
        } catch (e) {
          throw toBlockffnError(e);
        }
        if (more) {
          n++;
          if (n === 1) tFirst = now();
        }
        const { emit, stopped } = matcher.push(gen.text, !more);
        if (stopped || !more) {
          yield {
            text: emit,
            tokenIds: more ? [gen.token] : [],
            experts: more ? [gen.experts] : [],
            stats: stats(),
            finishReason: stopped ? 'stop' : gen.finishReason,
          };
          return;
        }
        yield { text: emit, tokenIds: [gen.token], experts: [gen.experts], stats: stats() };
        await yieldToEventLoop();
      }
    } finally {
      gen.free();
    }
  }
}

function toIds(ids, what) {
  if (!ids || typeof ids.length !== 'number') {
    throw new BlockffnError('InvalidInput', `${what} takes an array of token ids`);
  }
  const out = new Uint32Array(ids.length);
  for (let i = 0; i < ids.length; i++) {
    const v = ids[i];
    if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) {
      throw new BlockffnError('InvalidInput', `${what}: token id at position ${i} is not a non-negative integer (${v})`);
    }
    out[i] = v;
  }
  return out;
}
