// The main-thread side of the worker transport: same interface as LocalEngine, every call
// forwarded to a Web Worker running js/worker.js.
//
// A worker can stop under the engine: `worker.terminate()` from elsewhere in the page, a trap in
// its WebAssembly instance (js/worker.js then closes it: a trapped instance keeps a corrupt stack
// pointer and borrow flags, and its memory never shrinks), or an uncaught error. The engine finds
// out (a Web Lock the worker holds for its lifetime is released when it stops; the worker's own
// `fatal` report; the worker's `error` event), fails every pending call with a typed error, and
// the next `load()` or `init()` starts a new worker when the engine can make one (it started the
// worker itself, or was given a function that makes workers).

import { createChatCompletion } from './chat.js';
import { BlockffnError, abortError, deserializeError, toBlockffnError } from './errors.js';
import { checkSignal } from './options.js';

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

/** The error of every call pending (or made) after the worker stopped. */
function stoppedError(why) {
  return new BlockffnError(
    'Internal',
    `the blockffn worker stopped (${why}); the model it held is gone — call engine.load() again ` +
      '(it starts a new worker and loads the model into it)',
  );
}

function lockManager() {
  const locks = typeof navigator !== 'undefined' ? navigator.locks : undefined;
  return locks && typeof locks.request === 'function' && typeof AbortController === 'function' ? locks : null;
}

function randomId() {
  if (typeof crypto !== 'undefined' && typeof crypto.randomUUID === 'function') return crypto.randomUUID();
  return `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
}

export class WorkerEngine {
  /**
   * @param {Worker} worker a worker running js/worker.js
   * @param {{ ownsWorker?: boolean, spawn?: () => Worker }} [options] `ownsWorker`: this engine
   *   may terminate it; `spawn`: makes a replacement worker after one stopped (implies ownership).
   */
  constructor(worker, options = {}) {
    this._spawn = typeof options.spawn === 'function' ? options.spawn : null;
    this._owns = !!options.ownsWorker || !!this._spawn;
    this._nextId = 1;
    this._handlers = new Map(); // id → { result, error, progress, chunk, done }
    this._dead = null; // the error of every call while no worker runs
    this._terminated = false;
    this._initOptions = {}; // wasm/simd of the first init, given again to a replacement worker
    this._reviving = null;
    /** How many times a stopped worker was replaced. */
    this.restarts = 0;
    this._attach(worker);
    this.chat = { completions: { create: (req) => createChatCompletion(this, req) } };
  }

  _attach(worker) {
    this.worker = worker;
    const locks = lockManager();
    let started = false;
    const lockName = `blockffn-worker-${randomId()}`;
    const watch = new AbortController();
    const onMessage = (ev) => {
      if (this.worker !== worker) return;
      const msg = ev.data;
      if (!msg || msg[TAG] !== 1) return;
      started = true;
      if (msg.type === 'watching') {
        // The worker holds the lock until it stops: ours is granted then.
        if (msg.lock === lockName && locks) {
          locks
            .request(lockName, { signal: watch.signal }, () => {
              if (!watch.signal.aborted) this._lost(worker, stoppedError('it was terminated or crashed'));
            })
            .catch(() => {});
        }
        return;
      }
      const h = this._handlers.get(msg.id);
      if (msg.type === 'error' && msg.fatal) {
        // The worker's WebAssembly instance trapped: this call gets the trap, the rest `stopped`.
        if (h) h.error(deserializeError(msg.error));
        this._lost(worker, stoppedError('its WebAssembly instance trapped during another request'));
        return;
      }
      if (!h) return;
      if (msg.type === 'result') h.result(msg.value);
      else if (msg.type === 'error') h.error(deserializeError(msg.error));
      else if (msg.type === 'progress') h.progress && h.progress(msg.event);
      else if (msg.type === 'chunk') h.chunk && h.chunk(msg.chunk);
      else if (msg.type === 'done') h.done && h.done();
    };
    const onError = (ev) => {
      if (ev && typeof ev.preventDefault === 'function') ev.preventDefault();
      if (this.worker !== worker) return;
      const detail = ev && ev.message ? `: ${ev.message}` : '';
      this._lost(
        worker,
        started
          ? stoppedError(`an uncaught error${detail}`)
          : new BlockffnError(
              'Unsupported',
              `the blockffn worker failed to start${detail}; check that blockffn/worker is served (a bundler may ` +
                'have moved it), and note that module workers need Chrome 80+, Firefox 114+ or Safari 15+',
            ),
      );
    };
    const onMessageError = () => {
      if (this.worker !== worker) return;
      this._lost(worker, stoppedError('a message from it could not be read'));
    };
    worker.addEventListener('message', onMessage);
    worker.addEventListener('error', onError);
    worker.addEventListener('messageerror', onMessageError);
    this._detach = () => {
      watch.abort();
      worker.removeEventListener('message', onMessage);
      worker.removeEventListener('error', onError);
      worker.removeEventListener('messageerror', onMessageError);
    };
    if (locks) {
      try {
        this._post({ type: 'watch', lock: lockName });
      } catch {
        /* a worker that cannot be posted to fails the first call */
      }
    }
  }

  /** `worker` stopped (or must not be used again): every pending call fails with `err`. */
  _lost(worker, err) {
    if (this.worker !== worker || this._dead) return;
    this._fail(err);
    this._detach();
    if (this._owns) {
      try {
        worker.terminate();
      } catch {
        /* already gone */
      }
    }
  }

  _fail(err) {
    this._dead = err;
    for (const h of [...this._handlers.values()]) h.error(err);
    this._handlers.clear();
  }

  /** After the worker stopped: a new one, initialised as the first was. */
  _revive() {
    if (!this._dead) return Promise.resolve();
    if (this._terminated) return Promise.reject(this._dead);
    if (!this._spawn) {
      return Promise.reject(
        new BlockffnError(
          'Internal',
          `${this._dead.message}. This engine was given a Worker and cannot start another: create a new engine with ` +
            'a new worker, or pass createEngine({ worker: () => new Worker(…) }) so the engine can replace it',
        ),
      );
    }
    if (!this._reviving) {
      this._reviving = (async () => {
        let w;
        try {
          w = this._spawn();
        } catch (e) {
          throw toBlockffnError(e, 'cannot start a new blockffn worker');
        }
        if (!w || typeof w.postMessage !== 'function' || typeof w.addEventListener !== 'function') {
          throw new BlockffnError('InvalidInput', 'the worker function must return a Worker running blockffn/worker');
        }
        this._dead = null;
        this.restarts++;
        this._attach(w);
        await this._call('init', [this._initOptions]);
      })().finally(() => {
        this._reviving = null;
      });
    }
    return this._reviving;
  }

  _post(msg) {
    this.worker.postMessage({ [TAG]: 1, ...msg });
  }

  _call(method, args, { signal, onProgress } = {}) {
    return new Promise((resolve, reject) => {
      if (this._dead) return reject(this._dead);
      if (signal && signal.aborted) return reject(abortError(signal));
      const id = this._nextId++;
      const onAbort = () => {
        try {
          this._post({ type: 'abort', id });
        } catch {
          /* the worker is gone: its loss fails the call */
        }
      };
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

  async init(options = {}) {
    if (options && (options.wasm !== undefined || options.simd !== undefined || options.backend !== undefined)) {
      this._initOptions = { wasm: options.wasm, simd: options.simd, backend: options.backend };
    }
    if (this._dead) {
      await this._revive();
      return true;
    }
    return this._call('init', [options]);
  }

  async load(source, options = {}) {
    const { onProgress, signal, ...rest } = options;
    checkSignal(signal); // the signal stays here: the worker gets only its abort
    if (signal && signal.aborted) throw abortError(signal);
    if (this._dead) await this._revive();
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

  logits(ids, options = {}) {
    return this._call('logits', [Array.from(ids ?? []), options]);
  }

  unload() {
    return this._call('unload', []);
  }

  /** Stops the worker (only one this engine created); the engine cannot be used afterwards. */
  terminate() {
    this._terminated = true;
    if (!this._dead) this._fail(new BlockffnError('InvalidInput', 'this engine was terminated; create a new one'));
    else this._dead = new BlockffnError('InvalidInput', 'this engine was terminated; create a new one');
    this._detach();
    if (this._owns) {
      try {
        this.worker.terminate();
      } catch {
        /* already gone */
      }
    }
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
    const postAbort = () => {
      try {
        self._post({ type: 'abort', id });
      } catch {
        /* the worker is gone */
      }
    };
    const onAbort = () => {
      if (finished) return;
      postAbort();
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
      try {
        checkSignal(signal);
      } catch (e) {
        error = e;
        finished = true;
        return;
      }
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
        if (started && !finished) postAbort();
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
