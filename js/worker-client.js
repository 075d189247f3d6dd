// The main-thread side of the worker transport: same interface as LocalEngine, every call
// forwarded to a Web Worker running js/worker.js.

import { createChatCompletion } from './chat.js';
import { BlockffnError, abortError, deserializeError } from './errors.js';

const TAG = 'blockffn';

function absoluteSource(source) {
  if (source instanceof URL) return source.href;
  if (typeof source === 'string') {
    // The worker resolves relative URLs against its own script: resolve against the page here.
    const base = typeof location !== 'undefined' ? location.href : undefined;
    try {
      return base ? new URL(source, base).href : source;
    } catch {
      return source;
    }
  }
  if (typeof FileList !== 'undefined' && source instanceof FileList) return Array.from(source);
  return source;
}

export class WorkerEngine {
  /**
   * @param {Worker} worker a worker running js/worker.js
   * @param {{ ownsWorker?: boolean }} [options]
   */
  constructor(worker, options = {}) {
    this.worker = worker;
    this._owns = !!options.ownsWorker;
    this._nextId = 1;
    this._handlers = new Map(); // id → { result, error, progress, chunk, done }
    this._dead = null;
    this._onMessage = (ev) => {
      const msg = ev.data;
      if (!msg || msg[TAG] !== 1) return;
      const h = this._handlers.get(msg.id);
      if (!h) return;
      if (msg.type === 'result') h.result(msg.value);
      else if (msg.type === 'error') h.error(deserializeError(msg.error));
      else if (msg.type === 'progress') h.progress && h.progress(msg.event);
      else if (msg.type === 'chunk') h.chunk && h.chunk(msg.chunk);
      else if (msg.type === 'done') h.done && h.done();
    };
    this._onError = (ev) => {
      const detail = ev && ev.message ? `: ${ev.message}` : '';
      this._fail(
        new BlockffnError(
          'Unsupported',
          `the blockffn worker failed to start or crashed${detail}; module workers need Chrome 80+, Firefox 114+ or Safari 15+`,
        ),
      );
      if (ev && typeof ev.preventDefault === 'function') ev.preventDefault();
    };
    worker.addEventListener('message', this._onMessage);
    worker.addEventListener('error', this._onError);
    this.chat = { completions: { create: (req) => createChatCompletion(this, req) } };
  }

  _fail(err) {
    this._dead = err;
    for (const h of [...this._handlers.values()]) h.error(err);
    this._handlers.clear();
  }

  _post(msg) {
    this.worker.postMessage({ [TAG]: 1, ...msg });
  }

  _call(method, args, { signal, onProgress } = {}) {
    return new Promise((resolve, reject) => {
      if (this._dead) return reject(this._dead);
      if (signal && signal.aborted) return reject(abortError(signal));
      const id = this._nextId++;
      const onAbort = () => this._post({ type: 'abort', id });
      const end = () => {
        this._handlers.delete(id);
        signal && signal.removeEventListener('abort', onAbort);
      };
      this._handlers.set(id, {
        result: (v) => {
          end();
          resolve(v);
        },
        error: (e) => {
          end();
          reject(e);
        },
        progress: onProgress
          ? (ev) => {
              try {
                onProgress(ev);
              } catch {
                /* a throwing callback must not break loading */
              }
            }
          : null,
      });
      signal && signal.addEventListener('abort', onAbort, { once: true });
      try {
        this._post({ type: 'call', id, method, args });
      } catch (e) {
        end();
        reject(new BlockffnError('InvalidInput', `cannot send this request to the worker: ${e.message}`, { cause: e }));
      }
    });
  }

  init(options = {}) {
    return this._call('init', [options]);
  }

  load(source, options = {}) {
    const { onProgress, signal, ...rest } = options;
    return this._call('load', [absoluteSource(source), { ...rest, progress: !!onProgress }], { signal, onProgress });
  }

  modelInfo() {
    return this._call('modelInfo', []);
  }

  runtimeInfo() {
    return this._call('runtimeInfo', []);
  }

  tokenize(text, options = {}) {
    return this._call('tokenize', [text, options]);
  }

  detokenize(ids) {
    return this._call('detokenize', [Array.from(ids ?? [])]);
  }

  unload() {
    return this._call('unload', []);
  }

  /** Stops the worker (only one this engine created); the engine cannot be used afterwards. */
  terminate() {
    this._fail(new BlockffnError('InvalidInput', 'this engine was terminated; create a new one'));
    this.worker.removeEventListener('message', this._onMessage);
    this.worker.removeEventListener('error', this._onError);
    if (this._owns) this.worker.terminate();
  }

  generate(prompt, options = {}) {
    const { signal, ...rest } = options;
    const self = this;
    const queue = [];
    let id = 0;
    let started = false;
    let finished = false;
    let error = null;
    let wake = null;
    const notify = () => {
      if (wake) {
        const w = wake;
        wake = null;
        w();
      }
    };
    const onAbort = () => {
      if (finished) return;
      self._post({ type: 'abort', id });
      queue.length = 0;
      error = abortError(signal);
      finished = true;
      notify();
    };
    const cleanup = () => {
      self._handlers.delete(id);
      signal && signal.removeEventListener('abort', onAbort);
    };
    const start = () => {
      started = true;
      if (self._dead) {
        error = self._dead;
        finished = true;
        return;
      }
      if (signal && signal.aborted) {
        error = abortError(signal);
        finished = true;
        return;
      }
      id = self._nextId++;
      self._handlers.set(id, {
        chunk: (c) => {
          if (!finished) {
            queue.push(c);
            notify();
          }
        },
        done: () => {
          finished = true;
          notify();
        },
        error: (e) => {
          if (!finished) {
            error = e;
            finished = true;
          }
          notify();
        },
        result: () => {},
      });
      signal && signal.addEventListener('abort', onAbort, { once: true });
      try {
        self._post({ type: 'call', id, method: 'generate', args: [prompt, rest] });
      } catch (e) {
        error = new BlockffnError('InvalidInput', `cannot send this request to the worker: ${e.message}`, { cause: e });
        finished = true;
      }
    };
    const iterator = {
      [Symbol.asyncIterator]() {
        return iterator;
      },
      async next() {
        if (!started) start();
        for (;;) {
          if (queue.length) return { value: queue.shift(), done: false };
          if (error) {
            const e = error;
            error = null;
            cleanup();
            throw e;
          }
          if (finished) {
            cleanup();
            return { value: undefined, done: true };
          }
          await new Promise((r) => (wake = r));
        }
      },
      async return(value) {
        if (started && !finished) self._post({ type: 'abort', id });
        finished = true;
        error = null;
        queue.length = 0;
        if (started) cleanup();
        return { value, done: true };
      },
      async throw(e) {
        await iterator.return();
        throw e;
      },
    };
    return iterator;
  }
}
