// Display helpers of the page: human-readable quantities and the heatmap's colour ramp.

export function fmtBytes(n) {
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)} GB`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)} MB`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)} kB`;
  return `${Math.round(n)} B`;
}

export function fmtFlops(n) {
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)} GFLOP`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)} MFLOP`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)} kFLOP`;
  return `${Math.round(n)} FLOP`;
}

export function fmtPct(x) {
  return x === null || x === undefined || Number.isNaN(x) ? '–' : `${(100 * x).toFixed(1)}%`;
}

/** A sequential ramp, pale (few tokens of the chunk) to dark (all of them); t in [0, 1] → "rgb(r g b)". */
const RAMP = [
  [255, 226, 130],
  [253, 174, 97],
  [244, 109, 67],
  [200, 40, 50],
  [110, 0, 70],
];
export function rampColor(t) {
  const x = Math.max(0, Math.min(1, t)) * (RAMP.length - 1);
  const i = Math.min(RAMP.length - 2, Math.floor(x));
  const f = x - i;
  const c = RAMP[i].map((v, k) => Math.round(v + (RAMP[i + 1][k] - v) * f));
  return `rgb(${c[0]} ${c[1]} ${c[2]})`;
}
