// Small helpers shared by the benchmark sections.

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
