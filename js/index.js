// blockffn: exact BlockFFN Mixture-of-Experts inference in WebAssembly.
// One engine interface, two transports: in the calling thread, or in a Web Worker.

import { LocalEngine, checkBackend } from './engine.js';
import { BlockffnError, ERROR_CODES, toBlockffnError } from './errors.js';
import { CACHE_NAME, deleteModelFromCache, hasModelInCache, modelBaseUrl, modelFileUrl } from './loader.js';
import { checkOptionNames } from './options.js';
import { WorkerEngine } from './worker-client.js';
import { relaxedSimdSupported } from './wasm.js';

export { BlockffnError, ERROR_CODES, CACHE_NAME, hasModelInCache, deleteModelFromCache, modelBaseUrl, modelFileUrl, relaxedSimdSupported };
export { renderChat, chatPrompt, detectChatTemplate, chatStops } from './chat.js';
export {
  CLS_WINDOWS,
  chunkCounts,
  chunkOf,
  costModel,
  countExperts,
  expertSavings,
  independentCls,
  isExpertActive,
  sparsity,
  unpackExperts,
} from './sparsity.js';

/**
 * Creates an engine.
 * @param {{ worker?: boolean | Worker, wasm?: string | URL | BufferSource | WebAssembly.Module,
 *   simd?: 'auto' | 'relaxed' | 'baseline', backend?: 'auto' | 'webgpu' | 'wasm' }} [options]
 *   backend: where models run (a load() may override it): 'auto' (default) WebGPU when a hardware
 *   adapter exists and the model fits its limits, else the wasm kernels; 'webgpu' (rejects with
 *   Unsupported or OutOfMemory instead of falling back); 'wasm'. runtimeInfo() says which ran and why.
 *   worker: false (default) runs in this thread; true starts a module Web Worker running
 *   blockffn/worker; a Worker instance (running blockffn/worker) is used as is; a function returning
 *   such a Worker is called for the first worker and again to replace one that stopped. With true or
 *   a function, a worker that stops (terminated, crashed, or its wasm trapped) is replaced on the
 *   next load().
 *   wasm: where to load the .wasm from (default: the build next to the package that `simd` picks).
 *   simd: 'auto' (default: the relaxed-SIMD build where the JavaScript engine has relaxed SIMD,
 *   else the SIMD128 one), 'relaxed' or 'baseline'. One module per JS realm: the first engine of a
 *   thread decides.
 */
export async function createEngine(options = {}) {
  const { worker = false, wasm, simd, backend } = checkOptionNames(options, ['worker', 'wasm', 'simd', 'backend'], 'createEngine()');
  if (backend !== undefined) checkBackend(backend);
  if (!worker) {
    const e = new LocalEngine({ wasm, simd, backend });
    await e.init();
    return e;
  }
  let w = worker;
  let owns = false;
  let spawn = null;
  if (w === true) {
    if (typeof Worker === 'undefined') {
      throw new BlockffnError(
        'Unsupported',
        'Web Workers are not available in this environment (e.g. Node); use createEngine({ worker: false })',
      );
    }
    spawn = () => new Worker(new URL('./worker.js', import.meta.url), { type: 'module', name: 'blockffn' });
  } else if (typeof w === 'function') {
    spawn = w;
  }
  if (spawn) {
    try {
      w = spawn();
    } catch (e) {
      throw toBlockffnError(e, 'cannot start the blockffn worker');
    }
    owns = true;
  }
  if (!w || typeof w.postMessage !== 'function' || typeof w.addEventListener !== 'function') {
    throw new BlockffnError(
      'InvalidInput',
      'worker must be true, false, a Worker running blockffn/worker, or a function that returns one',
    );
  }
  const e = new WorkerEngine(w, { ownsWorker: owns, spawn });
  try {
    await e.init({
      ...(wasm === undefined ? {} : { wasm: wasm instanceof URL ? wasm.href : wasm }),
      ...(simd === undefined ? {} : { simd }),
      ...(backend === undefined ? {} : { backend }),
    });
  } catch (err) {
    e.terminate();
    throw err;
  }
  return e;
}
