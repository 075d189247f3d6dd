// Small helpers shared by the benchmark sections.

import { spawnSync } from 'node:child_process';
import { join } from 'node:path';

/** Median (the mean of the middle two for an even count). */
export const median = (v) => {
  const s = [...v].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

/** Last line of a child process's output (where the Python helpers print their JSON). */
export const lastLine = (s) => (s || '').trim().split('\n').pop();

/** A number with `d` decimals, '–' when missing. */
export const fmt = (v, d = 2) => (v === undefined || v === null ? '–' : Number(v).toFixed(d));

const reencoded = new Map();

/**
 * The demo model re-encoded to `dtype` by the CLI (`blockffn convert` takes a runtime package as
 * its source), made once per process under target/bench/demo-<dtype>; null (with a message) when
 * the CLI is missing or fails.
 */
export function demoAs(root, dtype, log) {
  if (!reencoded.has(dtype)) {
    const out = join(root, 'target/bench', `demo-${dtype}`);
    const r = spawnSync(join(root, 'target/release/blockffn'), ['convert', join(root, 'models/demo'), out, '--dtype', dtype], {
      encoding: 'utf8',
    });
    if (r.status !== 0) {
      log(`  demo ${dtype}: skipped (${r.error ? 'build the CLI: cargo build --release --features cli' : r.stderr.trim()})`);
    }
    reencoded.set(dtype, r.status === 0 ? out : null);
  }
  return reencoded.get(dtype);
}
