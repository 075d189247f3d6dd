// Typed errors. Every failure the engine reports is a BlockffnError with a stable `code`.

/** Every code a BlockffnError can carry. */
export const ERROR_CODES = Object.freeze([
  'ModelNotFound',
  'IntegrityMismatch',
  'OutOfMemory',
  'InvalidConfig',
  'InvalidCheckpoint',
  'InvalidInput',
  'Aborted',
  'Tokenizer',
  'Network',
  'Unsupported',
  'DeviceLost',
  'Internal',
]);

export class BlockffnError extends Error {
  /**
   * @param {string} code one of ERROR_CODES
   * @param {string} message what went wrong and what to do
   * @param {{ cause?: unknown }} [options]
   */
  constructor(code, message, options) {
    super(message, options);
    this.name = 'BlockffnError';
    this.code = ERROR_CODES.includes(code) ? code : 'Internal';
  }
}

/** The `Aborted` error of an aborted signal; its reason says why (a timeout, a superseding load). */
export function abortError(signal) {
  const reason = signal && signal.reason;
  if (reason instanceof BlockffnError && reason.code === 'Aborted') return reason;
  if (isTimeout(reason)) return timeoutError(reason);
  const why = reason instanceof Error && reason.name !== 'AbortError' ? `: ${reason.message}` : '';
  return new BlockffnError('Aborted', `the request was aborted${why}`, { cause: reason });
}

/** `AbortSignal.timeout()` aborts with a DOMException named TimeoutError. */
function isTimeout(e) {
  return !!e && typeof e === 'object' && e.name === 'TimeoutError';
}

function timeoutError(e, pre = '') {
  return new BlockffnError('Aborted', `${pre}the request was aborted: its signal timed out (${e.message})`, { cause: e });
}

export function throwIfAborted(signal) {
  if (signal && signal.aborted) throw abortError(signal);
}

/** Turns anything thrown (wasm errors with `code`, DOM errors, traps) into a BlockffnError. */
export function toBlockffnError(e, context = '') {
  if (e instanceof BlockffnError) return e;
  const pre = context ? `${context}: ` : '';
  if (e && typeof e === 'object') {
    if (typeof e.code === 'string' && e.code !== '' && e instanceof Error && isWasmCode(e.code)) {
      return new BlockffnError(mapWasmCode(e.code), pre + e.message, { cause: e });
    }
    if (e.name === 'AbortError') return new BlockffnError('Aborted', `${pre}the request was aborted`, { cause: e });
    if (isTimeout(e)) return timeoutError(e, pre);
    if (e.name === 'QuotaExceededError') {
      return new BlockffnError('OutOfMemory', `${pre}storage quota exceeded`, { cause: e });
    }
    if (typeof WebAssembly !== 'undefined' && e instanceof WebAssembly.CompileError) {
      return new BlockffnError(
        'Unsupported',
        `${pre}this JavaScript engine cannot compile the blockffn WebAssembly module (it needs WebAssembly SIMD128: ` +
          `Chrome/Edge 91+, Firefox 89+, Safari 16.4+, Node 16.4+): ${e.message}`,
        { cause: e },
      );
    }
    if (e instanceof RangeError && /memory|allocation/i.test(e.message)) {
      return new BlockffnError(
        'OutOfMemory',
        `${pre}the WebAssembly memory cannot grow (${e.message}); close other tabs or use a smaller model`,
        { cause: e },
      );
    }
    if (typeof WebAssembly !== 'undefined' && e instanceof WebAssembly.RuntimeError) {
      return new BlockffnError(
        'Internal',
        `${pre}the engine stopped on an internal error (${e.message}); this is a bug — please report it, ` +
          'then load the model again',
        { cause: e },
      );
    }
  }
  const msg = e instanceof Error ? e.message : String(e);
  return new BlockffnError('Internal', `${pre}${msg}`, { cause: e });
}

function isWasmCode(code) {
  return ERROR_CODES.includes(code) || code === 'UnsafePickle';
}

function mapWasmCode(code) {
  return code === 'UnsafePickle' ? 'InvalidCheckpoint' : code;
}

/** Plain-object form of an error, for postMessage. */
export function serializeError(e) {
  const err = toBlockffnError(e);
  return { code: err.code, message: err.message };
}

export function deserializeError(obj) {
  return new BlockffnError(obj && obj.code, (obj && obj.message) || 'unknown error in the worker');
}
