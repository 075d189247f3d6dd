// Web Worker entry: runs a LocalEngine off the main thread and answers the WorkerEngine's
// messages. Use it through `createEngine({ worker: true })`, or create the worker yourself
// (`new Worker(new URL('blockffn/worker', import.meta.url), { type: 'module' })`) and pass it.
//
// Lifetime: on the client's `watch` message the worker takes a Web Lock and holds it until it
// stops, so the client learns when it is terminated or crashes. A trap in the WebAssembly instance
// (an `unreachable` from a Rust panic or a failed allocation) leaves that instance unusable (its
// stack pointer and borrow flags are not restored, and its memory never shrinks): the worker
// reports the trap as `fatal` and closes itself; the client starts a new worker on the next load().

import { LocalEngine } from './engine.js';
import { serializeError } from './errors.js';
import * as wasmModule from './wasm.js';

const TAG = 'blockffn';
const scope = globalThis;
let engine = new LocalEngine();
const controllers = new Map(); // request id → AbortController
let trapped = null; // the serialized error of the trap that stopped this worker

// What wasm-bindgen reports when an object is used after a trap left it borrowed.
const AFTER_TRAP = /attempted to take ownership of Rust value while it was borrowed|recursive use of an object detected/;

/** Whether `e` (or an error it wraps) comes from a trap of the WebAssembly instance. */
function isTrap(e) {
  for (let x = e, depth = 0; x && typeof x === 'object' && depth < 8; x = x.cause, depth++) {
    if (typeof WebAssembly !== 'undefined' && x instanceof WebAssembly.RuntimeError) return true;
    if (x instanceof RangeError && /call stack/i.test(x.message)) return true; // wasm stack overflow
    if (x instanceof Error && AFTER_TRAP.test(x.message)) return true;
  }
  return false;
}

// Where the engine replaces a trapped instance in place (wasm.js's epoch), a call during which the
// epoch moved saw a trap even if its error no longer says so.
const epochNow = () => (typeof wasmModule.wasmEpoch === 'function' ? wasmModule.wasmEpoch() : 0);
const memoryBytes = () => (typeof wasmModule.wasmMemoryBytes === 'function' ? wasmModule.wasmMemoryBytes() : 0);

function stopAfterTrap(id, e, replaced) {
  let detail = e instanceof Error ? e.message : String(e);
  for (let x = e, depth = 0; x && depth < 8; x = x.cause, depth++) {
    if (typeof WebAssembly !== 'undefined' && x instanceof WebAssembly.RuntimeError) {
      detail = `${x.name}: ${x.message}`;
      break;
    }
  }
  // After an in-place replacement the memory read here is the new instance's, not the trapped one's.
  const mem = replaced ? '' : `; wasm memory ${Math.round(memoryBytes() / 1024 ** 2)} MiB`;
  const err = {
    code: 'Internal',
    message:
      `the blockffn worker stopped: its WebAssembly instance trapped (${detail}${mem} — a failed allocation when ` +
      'memory is near its limit, else a bug: please report it). A trapped instance cannot be used again; call ' +
      'engine.load() again: it starts a new worker and loads the model into it',
  };
  trapped = err;
  for (const c of controllers.values()) c.abort();
  post({ type: 'error', id, error: err, fatal: true });
  // Close after this message is on its way; the client also drops the worker on `fatal`.
  setTimeout(() => scope.close(), 0);
}

function post(msg, transfer) {
  scope.postMessage({ [TAG]: 1, ...msg }, transfer || []);
}

async function handleCall(id, method, args) {
  const ctrl = new AbortController();
  controllers.set(id, ctrl);
  const epoch = epochNow();
  try {
    switch (method) {
      case 'init': {
        const [opts] = args;
        if (opts && (opts.wasm !== undefined || opts.simd !== undefined || opts.backend !== undefined)) {
          engine = new LocalEngine({ wasm: opts.wasm, simd: opts.simd, backend: opts.backend });
        }
        await engine.init();
        post({ type: 'result', id, value: true });
        return;
      }
      case 'load': {
        const [source, { progress, ...opts } = {}] = args;
        const value = await engine.load(source, {
          ...opts,
          signal: ctrl.signal,
          onProgress: progress ? (event) => post({ type: 'progress', id, event }) : undefined,
        });
        post({ type: 'result', id, value });
        return;
      }
      case 'generate': {
        const [prompt, opts] = args;
        for await (const chunk of engine.generate(prompt, { ...opts, signal: ctrl.signal })) {
          post({ type: 'chunk', id, chunk }, chunk.experts.map((e) => e.buffer));
        }
        post({ type: 'done', id });
        return;
      }
      case 'tokenize':
      case 'detokenize':
      case 'logits':
      case 'modelInfo':
      case 'runtimeInfo':
      case 'unload': {
        const value = await engine[method](...args);
        post({ type: 'result', id, value });
        return;
      }
      default:
        throw new Error(`unknown method ${method}`);
    }
  } catch (e) {
    if (trapped) post({ type: 'error', id, error: trapped, fatal: true });
    else if (isTrap(e) || epochNow() !== epoch) stopAfterTrap(id, e, epochNow() !== epoch);
    else post({ type: 'error', id, error: serializeError(e) });
  } finally {
    controllers.delete(id);
  }
}

scope.addEventListener('message', (ev) => {
  const msg = ev.data;
  if (!msg || msg[TAG] !== 1) return;
  if (msg.type === 'call') {
    if (trapped) post({ type: 'error', id: msg.id, error: trapped, fatal: true });
    else handleCall(msg.id, msg.method, msg.args || []);
  } else if (msg.type === 'watch') {
    const locks = scope.navigator && scope.navigator.locks;
    if (locks && typeof locks.request === 'function' && typeof msg.lock === 'string') {
      // Held until this worker stops (the promise never settles).
      locks
        .request(msg.lock, () => {
          post({ type: 'watching', lock: msg.lock });
          return new Promise(() => {});
        })
        .catch(() => {});
    }
  } else if (msg.type === 'abort') {
    const c = controllers.get(msg.id);
    if (c) c.abort();
  }
});
