// Expert bitmasks and the sparsity metrics over them: the one JS implementation (the demo page and
// the tests import it through the package). Definitions are those of src/metrics.rs, and the masks
// are laid out as in src/experts.rs. tests/fixtures/sparsity/sparsity.json holds numbers computed
// by the Rust code; tests/sparsity_fixture.rs and tests/js/sparsity.test.mjs check both sides
// against it.
//
// A mask is one token's active experts, all layers: `numLayers * wordsPerLayer` u32 words, bit
// `e % 32` of word `l * wordsPerLayer + (e >> 5)` set iff expert `e` of layer `l` was active, with
// `wordsPerLayer = ceil(numExperts / 32)`. A mask of any other length (the empty mask of a token
// that was never run, a dense-FFN model) is skipped, as RunningSparsity::push skips it.

/** Window sizes L of the engine's CLS_L statistics (src/metrics.rs CLS_WINDOWS). */
export const CLS_WINDOWS = Object.freeze([1, 2, 4, 8, 16, 32, 64]);

function popcount32(x) {
  x >>>= 0;
  x -= (x >>> 1) & 0x55555555;
  x = (x & 0x33333333) + ((x >>> 2) & 0x33333333);
  return (((x + (x >>> 4)) & 0x0f0f0f0f) * 0x01010101) >>> 24;
}

const wordsFor = (numExperts) => Math.ceil(numExperts / 32);
const isMask = (m, length) => !!m && m.length === length && length > 0;

/** Number of bits set in a mask (every layer): the active (layer, expert) pairs of a token. */
export function countExperts(mask) {
  let n = 0;
  for (let i = 0; i < mask.length; i++) n += popcount32(mask[i]);
  return n;
}

/** Whether expert `expert` of layer `layer` is set in one token's mask. */
export function isExpertActive(mask, wordsPerLayer, layer, expert) {
  if (expert < 0 || expert >= wordsPerLayer * 32) return false;
  const w = mask[layer * wordsPerLayer + (expert >>> 5)];
  return w !== undefined && ((w >>> (expert & 31)) & 1) === 1;
}

/**
 * Expands one token's mask into sorted expert ids per layer: `mask.length / wordsPerLayer` lists,
 * or exactly `numLayers` when given (layers past the end of the mask are empty).
 * @param {ArrayLike<number>} mask
 * @param {number} wordsPerLayer from modelInfo().experts.wordsPerLayer
 * @param {number} [numLayers]
 * @returns {number[][]}
 */
export function unpackExperts(mask, wordsPerLayer, numLayers) {
  const out = [];
  if (!wordsPerLayer) return numLayers ? Array.from({ length: numLayers }, () => []) : out;
  const layers = numLayers ?? Math.ceil(mask.length / wordsPerLayer);
  for (let l = 0; l < layers; l++) {
    const ids = [];
    for (let w = 0; w < wordsPerLayer; w++) {
      let bits = (mask[l * wordsPerLayer + w] ?? 0) >>> 0;
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
 * TLS, CLS_L and reuse of one segment of tokens, as RunningSparsity reports them (the `stats` of a
 * generation): TLS = 1 − active (layer, token, expert) triples / all of them; CLS_L drops the
 * segment's first token, cuts the rest into non-overlapping windows of L tokens (a partial last
 * window is not counted), ORs each window and is 1 − active (layer, window, expert) / all of them;
 * reuse is the mean of |S_t ∩ S_t+1| / |S_t| over (layer, t) with S_t non-empty. `null` where
 * undefined (no tokens, no full window, no pair).
 * @param {ArrayLike<number>[]} masks one mask per token, in order
 * @returns {{ tokens: number, tls: number | null, cls: Record<number, number | null>, reuse: number | null }}
 */
export function sparsity(masks, numLayers, numExperts, windows = CLS_WINDOWS) {
  const words = wordsFor(numExperts);
  const n = numLayers * words;
  const open = windows.map((w) => ({ w, or: new Uint32Array(n), k: 0, used: 0, total: 0 }));
  let tokens = 0;
  let active = 0;
  let reuseSum = 0;
  let reuseN = 0;
  let prev = null;
  for (const m of numExperts > 0 ? masks : []) {
    if (!isMask(m, n)) continue;
    tokens++;
    active += countExperts(m);
    if (tokens > 1) {
      for (const o of open) {
        for (let i = 0; i < n; i++) o.or[i] |= m[i];
        if (++o.k === o.w) {
          o.used += countExperts(o.or);
          o.total += numLayers * numExperts;
          o.or.fill(0);
          o.k = 0;
        }
      }
    }
    if (prev) {
      for (let l = 0; l < numLayers; l++) {
        let na = 0;
        let common = 0;
        for (let i = l * words; i < (l + 1) * words; i++) {
          na += popcount32(prev[i]);
          common += popcount32(prev[i] & m[i]);
        }
        if (na > 0) {
          reuseSum += common / na;
          reuseN++;
        }
      }
    }
    prev = m;
  }
  return {
    tokens,
    tls: tokens > 0 ? 1 - active / (numLayers * tokens * numExperts) : null,
    cls: Object.fromEntries(open.map((o) => [o.w, o.total > 0 ? 1 - o.used / o.total : null])),
    reuse: reuseN > 0 ? reuseSum / reuseN : null,
  };
}

/**
 * The chunk that holds generated token `t` (0-based) for chunk size `L`, aligned as CLS_L counts
 * windows: the first token stands alone (CLS drops it), then windows of L tokens from token 1.
 * `n` tokens exist so far (the last chunk may be partial).
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
 * How many tokens of masks[start .. end) used each expert: a numLayers × numExperts array
 * (row-major). Masks of another length are skipped.
 */
export function chunkCounts(masks, start, end, numLayers, numExperts) {
  const words = wordsFor(numExperts);
  const counts = new Uint16Array(numLayers * numExperts);
  for (let t = start; t < end; t++) {
    const m = masks[t];
    if (!isMask(m, numLayers * words)) continue;
    for (let l = 0; l < numLayers; l++) {
      for (let w = 0; w < words; w++) {
        let bits = m[l * words + w] >>> 0;
        while (bits) {
          const e = w * 32 + 31 - Math.clz32(bits & -bits);
          if (e < numExperts) counts[l * numExperts + e]++;
          bits = (bits & (bits - 1)) >>> 0;
        }
      }
    }
  }
  return counts;
}

/**
 * The "no locality" reference for CLS_L: what it would be if each token picked its experts
 * independently at the observed per-(layer, expert) rates p (a window of L tokens misses an expert
 * with probability (1 − p)^L). Over the tokens after the first, like CLS_L; `null` without tokens.
 */
export function independentCls(masks, numLayers, numExperts, windows = CLS_WINDOWS) {
  const n = numLayers * wordsFor(numExperts);
  const known = Array.from(masks).filter((m) => isMask(m, n)).slice(1);
  const out = {};
  if (known.length === 0 || numExperts === 0) {
    for (const L of windows) out[L] = null;
    return out;
  }
  const counts = chunkCounts(known, 0, known.length, numLayers, numExperts);
  for (const L of windows) {
    let miss = 0;
    for (const c of counts) miss += (1 - c / known.length) ** L;
    out[L] = miss / counts.length;
  }
  return out;
}

/** Bytes per stored weight of a dtype (q8: an int8 plus an f32 scale per 32 weights). */
function bytesPerWeight(dtype) {
  return { f32: 4, f16: 2, bf16: 2, q8: 1 + 4 / 32 }[dtype] ?? 2;
}

/**
 * Per-expert costs of a model (a ModelInfo): an expert of one layer is an up block [de × H] (two
 * with a gated FFN) and a down block [H × de]. FLOPs count a multiply-add as 2; the router,
 * attention and norms run in both modes and are not counted as savable.
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
 * What sparse execution skipped over `masks` (one per token) versus computing every expert, and
 * what chunked execution (each expert of a chunk's union read once per chunk; chunks as chunkOf
 * aligns them) would read, for a model described by `info` (a ModelInfo).
 */
export function expertSavings(masks, info, L) {
  const layers = info.numLayers;
  const experts = info.experts.count;
  const known = Array.from(masks).filter((m) => isMask(m, layers * wordsFor(experts)));
  const n = known.length;
  const cost = costModel(info);
  let active = 0;
  for (const m of known) active += countExperts(m);
  const blocks = n * layers * experts;
  const skipped = blocks - active;
  let unionBlocks = 0;
  let chunks = 0;
  for (let s = 0; s < n; ) {
    const e = s === 0 ? 1 : Math.min(n, s + L);
    const c = chunkCounts(known, s, e, layers, experts);
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
