// The router's decision for every token of the span, on the GPU — the twin of
// cpu::block_ffn::route. `a` holds the router logits (`[k, ne]`, matvec.wgsl).
//   ReLU router (norm 0 none, 1 rms, 2 sum): an expert is active iff a > 0 (never decided from the
//   normalised score), scores = norm(ReLU(a)): rms over all ne entries (zeros included) times the
//   norm weight, sum ÷ (Σ · norm_scale + 1e-5), or none.
//   TopK baseline (norm 3): softmax over all ne logits, the `top_k` largest kept (the lower id
//   wins a tie), the rest 0.
// Writes each token's scores (`[k, ne]`, 0 for inactive experts), its expert bitmask into the
// telemetry buffer (token t's mask of this layer at (t · layers + layer) · words), and the union of
// the span's active experts compacted in ascending order (active[0] = count, then the ids): the
// list the sparse kernels run over, never read back. One workgroup for the whole span.

const WG: u32 = 256u;

struct Params {
    ne: u32,
    norm: u32,
    eps: f32,
    norm_scale: f32,
    layer: u32,
    layers: u32,
    top_k: u32,
    _a: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> g: array<f32>; // rms norm weight (a 1-value dummy otherwise)
@group(0) @binding(3) var<storage, read_write> scores: array<f32>;
@group(0) @binding(4) var<storage, read_write> active_ids: array<u32>; // [1 + ne]
@group(0) @binding(5) var<storage, read_write> mask: array<u32>; // [k, layers, words]

var<workgroup> partial: array<f32, 256>;
var<workgroup> union_bits: array<atomic<u32>, 8>; // up to 256 experts

fn tree_sum(lid: u32) -> f32 {
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        workgroupBarrier();
        if (lid < s) {
            partial[lid] += partial[lid + s];
        }
    }
    workgroupBarrier();
    let v = partial[0];
    workgroupBarrier();
    return v;
}

fn tree_max(lid: u32) -> f32 {
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        workgroupBarrier();
        if (lid < s) {
            partial[lid] = max(partial[lid], partial[lid + s]);
        }
    }
    workgroupBarrier();
    let v = partial[0];
    workgroupBarrier();
    return v;
}

@compute @workgroup_size(256)
fn route(@builtin(local_invocation_index) lid: u32) {
    let words = (p.ne + 31u) / 32u;
    if (lid < 8u) {
        atomicStore(&union_bits[lid], 0u);
    }
    for (var t = 0u; t < step.k; t++) {
        let o = t * p.ne;
        if (p.norm == 3u) {
            // Softmax over all logits, as kernels::scalar::softmax.
            var m = -3.4028234663852886e38;
            for (var e = lid; e < p.ne; e += WG) {
                m = max(m, a[o + e]);
            }
            partial[lid] = m;
            let mx = tree_max(lid);
            var acc = 0.0;
            for (var e = lid; e < p.ne; e += WG) {
                acc += exp(a[o + e] - mx);
            }
            partial[lid] = acc;
            let total = tree_sum(lid);
            for (var e = lid; e < p.ne; e += WG) {
                scores[o + e] = exp(a[o + e] - mx) / total;
            }
            // Thread 0 reads every thread's scores next: a storage barrier (workgroupBarrier orders
            // only workgroup memory).
            storageBarrier();
            // Top k by repeated selection (ne is small): the largest not yet taken, lower id first.
            if (lid == 0u) {
                for (var wd = 0u; wd < words; wd++) {
                    mask[(t * p.layers + p.layer) * words + wd] = 0u;
                }
                for (var j = 0u; j < p.top_k; j++) {
                    var best = p.ne;
                    for (var e = 0u; e < p.ne; e++) {
                        let taken = (mask[(t * p.layers + p.layer) * words + e / 32u] >> (e % 32u)) & 1u;
                        if (taken == 0u && (best == p.ne || scores[o + e] > scores[o + best])) {
                            best = e;
                        }
                    }
                    mask[(t * p.layers + p.layer) * words + best / 32u] |= 1u << (best % 32u);
                }
                for (var e = 0u; e < p.ne; e++) {
                    let bit = (mask[(t * p.layers + p.layer) * words + e / 32u] >> (e % 32u)) & 1u;
                    if (bit == 0u) {
                        scores[o + e] = 0.0;
                    } else {
                        atomicOr(&union_bits[e / 32u], 1u << (e % 32u));
                    }
                }
            }
            workgroupBarrier();
            continue;
        }
        var acc = 0.0;
        for (var e = lid; e < p.ne; e += WG) {
            let v = max(a[o + e], 0.0);
            acc += select(v, v * v, p.norm == 1u);
        }
        partial[lid] = acc;
        let total = tree_sum(lid);
        for (var e = lid; e < p.ne; e += WG) {
            let v = select(0.0, a[o + e], a[o + e] > 0.0);
            var sc = v;
            if (p.norm == 1u) {
                sc = v * (1.0 / sqrt(total / f32(p.ne) + p.eps)) * g[e];
            } else if (p.norm == 2u) {
                sc = v / (total * p.norm_scale + 1e-5);
            }
            scores[o + e] = sc;
        }
        for (var wd = lid; wd < words; wd += WG) {
            var bits = 0u;
            for (var j = 0u; j < 32u; j++) {
                let e = wd * 32u + j;
                if (e < p.ne && a[o + e] > 0.0) {
                    bits |= 1u << j;
                }
            }
            mask[(t * p.layers + p.layer) * words + wd] = bits;
            atomicOr(&union_bits[wd], bits);
        }
        workgroupBarrier();
    }
    workgroupBarrier();
    // The union, compacted ascending by one thread (ne is at most a few hundred experts).
    if (lid == 0u) {
        var n = 0u;
        for (var wd = 0u; wd < words; wd++) {
            let bits = atomicLoad(&union_bits[wd]);
            for (var j = 0u; j < 32u; j++) {
                if (((bits >> j) & 1u) == 1u) {
                    active_ids[1u + n] = wd * 32u + j;
                    n++;
                }
            }
        }
        active_ids[0] = n;
    }
}
