// Web Worker entry: runs a LocalEngine off the main thread and answers the WorkerEngine's
// messages. Use it through `createEngine({ worker: true })`, or create the worker yourself
// (`new Worker(new URL('blockffn/worker', import.meta.url), { type: 'module' })`) and pass it.

import { LocalEngine } from './engine.js';
import { serializeError } from './errors.js';

const TAG = 'blockffn';
const scope = globalThis;
let engine = new LocalEngine();
const controllers = new Map(); // request id → AbortController

function post(msg, transfer) {
  scope.postMessage({ [TAG]: 1, ...msg }, transfer || []);
}

async function handleCall(id, method, args) {
  const ctrl = new AbortController();
  controllers.set(id, ctrl);
  try {
    switch (method) {
      case 'init': {
        const [opts] = args;
        if (opts && (opts.wasm !== undefined || opts.simd !== undefined)) {
          engine = new LocalEngine({ wasm: opts.wasm, simd: opts.simd });
        }
        await engine.init();
        post({ type: 'result', id, value: true });
        return;
      }
      case 'load': {
        const [source, opts] = args;
        const value = await engine.load(source, {
          ...opts,
          signal: ctrl.signal,
          onProgress: opts && opts.progress ? (event) => post({ type: 'progress', id, event }) : undefined,
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
    post({ type: 'error', id, error: serializeError(e) });
  } finally {
    controllers.delete(id);
  }
}

scope.addEventListener('message', (ev) => {
  const msg = ev.data;
  if (!msg || msg[TAG] !== 1) return;
  if (msg.type === 'call') {
    handleCall(msg.id, msg.method, msg.args || []);
  } else if (msg.type === 'abort') {
    const c = controllers.get(msg.id);
    if (c) c.abort();
  }
});
