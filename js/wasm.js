// Loads the wasm module (built by scripts/build-wasm.sh: cargo + wasm-bindgen --target web, into ../pkg) once per JS realm.
// Two builds ship: blockffn_bg.wasm (SIMD128, runs everywhere WebAssembly SIMD does) and
// blockffn_relaxed_bg.wasm (plus relaxed SIMD: fused multiply-add in the kernels), chosen by
// feature detection. Browsers fetch the file next to this package; Node reads it from disk (Node
// cannot fetch file: URLs).

import initWasm, * as bindings from '../pkg/blockffn.js';
import { BlockffnError, toBlockffnError } from './errors.js';

export const isNode =
  typeof process !== 'undefined' && !!(process.versions && process.versions.node) && typeof window === 'undefined';

// Hidden from bundlers: only Node takes this path.
export const nodeImport = (name) => import(/* webpackIgnore: true */ /* @vite-ignore */ name);

// A module whose one function is `f32x4.relaxed_madd` of its three v128 parameters: it validates
// only where relaxed SIMD is enabled (Chrome/Edge ≥ 114, Node ≥ 22 or with
// --experimental-wasm-relaxed-simd; not Firefox or Safari by default).
const RELAXED_PROBE = new Uint8Array([
  0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // magic, version
  0x01, 0x08, 0x01, 0x60, 0x03, 0x7b, 0x7b, 0x7b, 0x01, 0x7b, // type: (v128 v128 v128) -> v128
  0x03, 0x02, 0x01, 0x00, // function 0 has type 0
  0x0a, 0x0d, 0x01, 0x0b, 0x00, 0x20, 0x00, 0x20, 0x01, 0x20, 0x02, 0xfd, 0x85, 0x02, 0x0b, // body
]);

/** Whether this JavaScript engine runs WebAssembly relaxed SIMD. */
export function relaxedSimdSupported() {
  try {
    return WebAssembly.validate(RELAXED_PROBE);
  } catch {
    return false;
  }
}

async function packaged(url) {
  if (isNode && url.protocol === 'file:') {
    const { readFile } = await nodeImport('node:fs/promises');
    return readFile(url);
  }
  return url;
}

let ready = null;
let started = false;
/** Bumps each time a trapped instance is replaced: objects of an older epoch are unusable. */
let epoch = 0;

/**
 * Initialises the wasm module, once per realm (later calls return the first module). `input` may
 * be a URL, a Response, bytes or a WebAssembly.Module; by default the build next to this package
 * that `simd` picks: 'auto' (relaxed SIMD where the engine has it, else baseline SIMD128),
 * 'relaxed' or 'baseline'.
 * @returns {Promise<typeof bindings>}
 */
export function loadWasm(input, simd = 'auto') {
  if (!ready) {
    ready = (async () => {
      if (!['auto', 'relaxed', 'baseline'].includes(simd)) {
        throw new BlockffnError('InvalidInput', `simd must be 'auto', 'relaxed' or 'baseline', not ${JSON.stringify(simd)}`);
      }
      if (simd === 'relaxed' && (input === undefined || input === null) && !relaxedSimdSupported()) {
        throw new BlockffnError(
          'Unsupported',
          "this JavaScript engine has no WebAssembly relaxed SIMD (Chrome/Edge 114+, Node 22+); use simd: 'auto' or 'baseline'",
        );
      }
      if (input !== undefined && input !== null) {
        await initWasm({ module_or_path: input });
        started = true;
        return bindings;
      }
      if (simd === 'relaxed' || (simd === 'auto' && relaxedSimdSupported())) {
        try {
          await initWasm({
            module_or_path: await packaged(new URL('../pkg/blockffn_relaxed_bg.wasm', import.meta.url)),
          });
          started = true;
          return bindings;
        } catch (e) {
          // 'auto' falls back to the baseline build (e.g. a development build without the
          // relaxed file); an explicit 'relaxed' reports why it could not start.
          if (simd === 'relaxed') throw e;
        }
      }
      await initWasm({ module_or_path: await packaged(new URL('../pkg/blockffn_bg.wasm', import.meta.url)) });
      started = true;
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
  return started ? bindings.wasmMemoryBytes() : 0;
}

/** 'wasm-relaxed-simd' or 'wasm-simd128': the build that runs (null before initialisation). */
export function wasmBackend() {
  return started ? `wasm-${bindings.simdVariant()}` : null;
}

export function wasmEpoch() {
  return epoch;
}

/**
 * The trap behind `e` (a WebAssembly.RuntimeError such as `unreachable` from a Rust panic or a
 * failed allocation, a wasm stack overflow, or the borrow error wasm-bindgen raises for an object
 * a trapped call left borrowed), or null.
 */
export function trapOf(e) {
  for (let x = e, depth = 0; x && typeof x === 'object' && depth < 4; x = x.cause, depth++) {
    if (typeof WebAssembly !== 'undefined' && x instanceof WebAssembly.RuntimeError) return x;
    if (x instanceof RangeError && /call stack/i.test(x.message)) return x;
    if (x instanceof Error && /attempted to take ownership of Rust value while it was borrowed|recursive use of an object/.test(x.message)) {
      return x;
    }
  }
  return null;
}

/**
 * Replaces a trapped instance with a fresh one (new, small memory; the trapped one's memory is
 * released once nothing refers to it). A trap skips every destructor: the trapped instance keeps
 * the stack pointer where the trap left it, the borrow flags of the objects the call was using,
 * and everything it had allocated. Every object of the old instance (engines, generations) is
 * unusable afterwards, which `wasmEpoch()` tells the engines. Returns false when `trap` was
 * handled already.
 */
export function restartWasm(trap) {
  if (!started || handledTraps.has(trap)) return false;
  handledTraps.add(trap);
  // Only sets a flag in the JS glue; the next export call (this cheap one) makes the new instance.
  bindings.scheduleReinit();
  bindings.wasmMemoryBytes();
  epoch++;
  return true;
}

const handledTraps = new WeakSet();

export { bindings };
