// Pure computations of the demo page over the engine's per-token expert bitmasks (no DOM): chunk
// windows as the engine's CLS counts them, per-chunk expert counts, the "no locality" reference
// curve, and the cost model behind the FLOPs/bytes-saved estimates. Imported by app.js and by the
// Node side of tests/browser/demo.test.mjs.

/** Chunk sizes the page offers (the engine reports CLS_L for these and 64). */
export const CHUNK_SIZES = [1, 2, 4, 8, 16, 32];
/** Window sizes of the engine's CLS statistics. */
export const CLS_WINDOWS = [1, 2, 4, 8, 16, 32, 64];

/** Number of set bits of a u32. */
export function popcount32(x) {
  x >>>= 0;
  x -= (x >>> 1) & 0x55555555;
  x = (x & 0x33333333) + ((x >>> 2) & 0x33333333);
  return (((x + (x >>> 4)) & 0x0f0f0f0f) * 0x01010101) >>> 24;
}

/** Whether expert `e` of layer `l` is set in one token's mask (`words` u32 per layer). */
export function isActive(mask, words, l, e) {
  const w = mask[l * words + (e >>> 5)];
  return w !== undefined && ((w >>> (e & 31)) & 1) === 1;
}

/** Number of active experts of layer `l` in a mask. */
export function activeInLayer(mask, words, l) {
  let n = 0;
  for (let w = 0; w < words; w++) n += popcount32(mask[l * words + w] ?? 0);
  return n;
}

/** Sorted active expert ids per layer (like the package's unpackExperts). */
export function expertLists(mask, words, layers) {
  const out = [];
  for (let l = 0; l < layers; l++) {
    const ids = [];
    for (let w = 0; w < words; w++) {
      let bits = (mask[l * words + w] ?? 0) >>> 0;
      while (bits) {
        const b = 31 - Math.clz32(bits & -bits);
        ids.push(w * 32 + b);
        bits = (bits & (bits - 1)) >>> 0;
      }
    }
    out.push(ids);
  }
  return out;
}

/**
 * The chunk that holds generated token `t` (0-based) for chunk size `L`, aligned like the engine's
 * CLS_L: the first generated token stands alone (CLS drops it: it has no predecessor), then
 * windows of L tokens start at token 1. `n` tokens exist so far (the last chunk may be partial).
 * @returns {{ index: number, start: number, end: number, full: boolean }} tokens [start, end);
 *   index -1 for the first token.
 */
export function chunkOf(t, L, n) {
  if (t <= 0) return { index: -1, start: 0, end: Math.min(1, n), full: true };
  const index = Math.floor((t - 1) / L);
  const start = 1 + index * L;
  return { index, start, end: Math.min(n, start + L), full: start + L <= n };
}

/**
 * How many tokens of [start, end) used each expert: a layers × experts array (row-major).
 * @param {ArrayLike<number>[]} masks one mask per token
 */
export function chunkCounts(masks, start, end, layers, experts, words) {
  const counts = new Uint16Array(layers * experts);
  for (let t = start; t < end; t++) {
    const m = masks[t];
    if (!m || m.length === 0) continue;
    for (let l = 0; l < layers; l++) {
      for (let w = 0; w < words; w++) {
        let bits = (m[l * words + w] ?? 0) >>> 0;
        while (bits) {
          const b = 31 - Math.clz32(bits & -bits);
          const e = w * 32 + b;
          if (e < experts) counts[l * experts + e]++;
          bits = (bits & (bits - 1)) >>> 0;
        }
      }
    }
  }
  return counts;
}

/**
 * TLS and CLS_L recomputed from masks with the engine's definitions (src/metrics.rs): TLS over
 * every token; CLS_L over the full windows after the first token. `null` where undefined.
 */
export function sparsityFromMasks(masks, layers, experts, words, windows = CLS_WINDOWS) {
  const known = masks.filter((m) => m && m.length > 0);
  const n = known.length;
  if (n === 0 || experts === 0) return { tls: null, cls: Object.fromEntries(windows.map((w) => [w, null])) };
  let active = 0;
  for (const m of known) for (let l = 0; l < layers; l++) active += activeInLayer(m, words, l);
  const tls = 1 - active / (n * layers * experts);
  const cls = {};
  for (const L of windows) {
    let used = 0;
    let total = 0;
    for (let s = 1; s + L <= n; s += L) {
      const c = chunkCounts(known, s, s + L, layers, experts, words);
      for (const v of c) if (v > 0) used++;
      total += layers * experts;
    }
    cls[L] = total > 0 ? 1 - used / total : null;
  }
  return { tls, cls };
}

/**
 * The "no locality" reference: CLS_L if each token picked its experts independently with the same
 * per-(layer, expert) rates as observed (rate p → a window of L tokens misses the expert with
 * probability (1-p)^L). Over the tokens after the first, like CLS.
 */
export function independentCls(masks, layers, experts, words, windows = CLS_WINDOWS) {
  const known = masks.slice(1).filter((m) => m && m.length > 0);
  const out = {};
  if (known.length === 0 || experts === 0) {
    for (const L of windows) out[L] = null;
    return out;
  }
  const counts = chunkCounts(known, 0, known.length, layers, experts, words);
  for (const L of windows) {
    let miss = 0;
    for (const c of counts) miss += (1 - c / known.length) ** L;
    out[L] = miss / counts.length;
  }
  return out;
}

/** Bytes per stored weight of a dtype (q8: an int8 plus an f32 scale per 32 weights). */
export function bytesPerWeight(dtype) {
  return { f32: 4, f16: 2, bf16: 2, q8: 1 + 4 / 32 }[dtype] ?? 2;
}

/**
 * Per-expert costs from a ModelInfo: an expert of one layer is an up block [de × H] (two with a
 * gated FFN) and a down block [H × de]. FLOPs count a multiply-add as 2; the router, attention
 * and norms run in both modes and are not counted as savable.
 */
export function costModel(info) {
  const H = info.hiddenSize;
  const de = info.experts.size;
  const gated = !!(info.config && info.config.ffn_gated);
  const expertParams = (gated ? 3 : 2) * de * H;
  const tied = !!(info.config && info.config.tie_word_embeddings);
  // Per token every weight matrix is used once, except the input embedding (a lookup).
  const matmulParams = info.params - (tied ? 0 : info.vocabSize * H);
  return {
    expertParams,
    flopsPerExpert: 2 * expertParams,
    bytesPerExpert: expertParams * bytesPerWeight(info.dtype),
    denseFlopsPerToken: 2 * matmulParams,
  };
}

/**
 * What sparse execution skipped over `masks` versus computing every expert, and what chunked
 * execution (each expert of a chunk's union read once per chunk of L) would read.
 */
export function savings(masks, info, L) {
  const layers = info.numLayers;
  const experts = info.experts.count;
  const words = info.experts.wordsPerLayer;
  const known = masks.filter((m) => m && m.length > 0);
  const n = known.length;
  const cost = costModel(info);
  let active = 0;
  for (const m of known) for (let l = 0; l < layers; l++) active += activeInLayer(m, words, l);
  const blocks = n * layers * experts;
  const skipped = blocks - active;
  // Chunks as chunkOf aligns them: the first token alone, then windows of L.
  let unionBlocks = 0;
  let chunks = 0;
  for (let s = 0; s < n; ) {
    const e = s === 0 ? 1 : Math.min(n, s + L);
    const c = chunkCounts(known, s, e, layers, experts, words);
    for (const v of c) if (v > 0) unionBlocks++;
    chunks++;
    s = e;
  }
  return {
    tokens: n,
    blocks,
    skipped,
    skippedShare: blocks ? skipped / blocks : 0,
    flopsSaved: skipped * cost.flopsPerExpert,
    flopsDense: blocks * cost.flopsPerExpert,
    flopsShareOfModel: n ? (skipped * cost.flopsPerExpert) / (n * cost.denseFlopsPerToken) : 0,
    bytesSkipped: skipped * cost.bytesPerExpert,
    bytesDense: blocks * cost.bytesPerExpert,
    chunks,
    chunkBytesRead: unionBlocks * cost.bytesPerExpert,
    chunkBytesDense: chunks * layers * experts * cost.bytesPerExpert,
  };
}

/** Human-readable quantities. */
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
