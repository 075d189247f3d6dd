// Loads the wasm module (built by `wasm-pack --target web` into ../pkg) once per JS realm.
// Browsers fetch it next to this file; Node reads the bytes from disk (Node cannot fetch file: URLs).

import initWasm, * as bindings from '../pkg/blockffn.js';
import { toBlockffnError } from './errors.js';

export const isNode =
  typeof process !== 'undefined' && !!(process.versions && process.versions.node) && typeof window === 'undefined';

// Hidden from bundlers: only Node takes this path.
export const nodeImport = (name) => import(/* webpackIgnore: true */ /* @vite-ignore */ name);

let ready = null;
let exportsObj = null;

/**
 * Initialises the wasm module. `input` may be a URL, a Response, bytes or a WebAssembly.Module;
 * by default the module next to this package is used.
 * @returns {Promise<typeof bindings>}
 */
export function loadWasm(input) {
  if (!ready) {
    ready = (async () => {
      let source = input;
      if (source === undefined || source === null) {
        const url = new URL('../pkg/blockffn_bg.wasm', import.meta.url);
        if (isNode && url.protocol === 'file:') {
          const { readFile } = await nodeImport('node:fs/promises');
          source = await readFile(url);
        } else {
          source = url;
        }
      }
      exportsObj = await initWasm({ module_or_path: source });
      return bindings;
    })().catch((e) => {
      ready = null;
      throw toBlockffnError(e, 'cannot start the blockffn WebAssembly module');
    });
  }
  return ready;
}

/** Bytes of wasm linear memory right now (0 before initialisation). */
export function wasmMemoryBytes() {
  return exportsObj ? exportsObj.memory.buffer.byteLength : 0;
}

export { bindings };
