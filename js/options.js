// Option checking shared by the engine, the loader, the chat API and createEngine: an unknown
// option name or a value of the wrong type is an InvalidInput error that names the option (and,
// for a typo, the valid name it is closest to), never a silently ignored setting.

import { BlockffnError } from './errors.js';

/** A value as an error message shows it: `NaN`, `-1`, `"fast"`, `an object`. */
export function describe(v) {
  if (typeof v === 'number') return Object.is(v, -0) ? '-0' : String(v);
  if (typeof v === 'bigint') return `${v}n`;
  if (typeof v === 'string') return JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}…` : v);
  if (v === null || v === undefined || typeof v === 'boolean') return String(v);
  if (typeof v === 'function') return 'a function';
  if (Array.isArray(v)) return 'an array';
  return 'an object';
}

/** Edit distance between two short names, ignoring case (a case slip counts as nothing). */
function editDistance(a, b) {
  a = a.toLowerCase();
  b = b.toLowerCase();
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) {
      row[j] = Math.min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = row;
  }
  return prev[b.length];
}

/** The name in `names` closest to `name`, when it is close enough to be a typo of it. */
export function nearestName(name, names) {
  let best = null;
  let bestD = Infinity;
  for (const n of names) {
    const d = editDistance(name, n);
    if (d < bestD) {
      best = n;
      bestD = d;
    }
  }
  if (bestD <= Math.max(2, Math.floor(name.length / 3))) return best;
  // A shortened or lengthened name (`maxMemory` for `maxMemoryBytes`).
  const lower = name.toLowerCase();
  return names.find((n) => lower.length >= 3 && (n.toLowerCase().startsWith(lower) || lower.startsWith(n.toLowerCase()))) ?? null;
}

/**
 * Throws InvalidInput when `options` is not an object or has a key outside `known`:
 * "generate(): unknown option `maxtokens`; did you mean `maxTokens`?".
 */
export function checkOptionNames(options, known, what) {
  if (options === undefined) return {};
  if (options === null || typeof options !== 'object' || Array.isArray(options)) {
    throw new BlockffnError('InvalidInput', `${what}: options must be an object, got ${describe(options)}`);
  }
  for (const key of Object.keys(options)) {
    if (known.includes(key)) continue;
    const near = nearestName(key, known);
    throw new BlockffnError(
      'InvalidInput',
      `${what}: unknown option \`${key}\`; ` + (near ? `did you mean \`${near}\`?` : `the options are ${known.map((k) => `\`${k}\``).join(', ')}`),
    );
  }
  return options;
}

/**
 * `o[key]` as a checked number (undefined when absent or null). `label` is the name the caller
 * knows the option by (the chat API's `max_tokens` for generate's `maxTokens`).
 */
export function optNumber(o, key, { min, max, integer = false, exclusiveMin = false, label = key } = {}) {
  const v = o[key];
  if (v === undefined || v === null) return undefined;
  const range =
    (min !== undefined ? (exclusiveMin ? ` > ${min}` : ` >= ${min}`) : '') + (max !== undefined ? ` and <= ${max}` : '');
  const bad = () =>
    new BlockffnError('InvalidInput', `${label} must be ${integer ? 'an integer' : 'a finite number'}${range}, got ${describe(v)}`);
  if (typeof v !== 'number' || !Number.isFinite(v)) throw bad();
  if (integer && !Number.isSafeInteger(v)) throw bad();
  if (min !== undefined && (exclusiveMin ? v <= min : v < min)) throw bad();
  if (max !== undefined && v > max) throw bad();
  return v;
}

/** `o[key]` as a boolean (undefined when absent). */
export function optBoolean(o, key, label = key) {
  const v = o[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'boolean') throw new BlockffnError('InvalidInput', `${label} must be true or false, got ${describe(v)}`);
  return v;
}

/** `o[key]` as a function (undefined when absent). */
export function optFunction(o, key, label = key) {
  const v = o[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'function') throw new BlockffnError('InvalidInput', `${label} must be a function, got ${describe(v)}`);
  return v;
}

/** An AbortSignal or nothing; anything else (e.g. an AbortController) is InvalidInput. */
export function checkSignal(signal, label = 'signal') {
  if (signal === undefined || signal === null) return undefined;
  const looksLikeSignal =
    typeof signal === 'object' && typeof signal.aborted === 'boolean' && typeof signal.addEventListener === 'function';
  if (!looksLikeSignal) {
    const hint = signal && typeof signal.abort === 'function' && signal.signal ? ' (pass controller.signal, not the controller)' : '';
    throw new BlockffnError(
      'InvalidInput',
      `${label} must be an AbortSignal (e.g. new AbortController().signal or AbortSignal.timeout(ms)), got ${describe(signal)}${hint}`,
    );
  }
  return signal;
}
