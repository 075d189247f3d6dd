// The BlockFFN router's decision for one token, on the GPU — the twin of cpu::block_ffn::route
// (ReLU router): a = router logits (matvec.wgsl), an expert is active iff a > 0 (never decided from
// the normalised score), scores = norm(ReLU(a)) with norm rms (over all ne entries, zeros
// included, times the norm weight), sum (÷ (Σ · norm_scale + 1e-5)) or none. Writes the scores,
// the token's expert bitmask (telemetry) and the active experts compacted in ascending order
// (active[0] = count, then the ids): the list the sparse kernels run over, never read back.

const WG: u32 = 256u;

struct Params {
    ne: u32,
    norm: u32, // 0 none, 1 rms, 2 sum
    eps: f32,
    norm_scale: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> g: array<f32>; // rms norm weight (a 1-value dummy otherwise)
@group(0) @binding(3) var<storage, read_write> scores: array<f32>;
@group(0) @binding(4) var<storage, read_write> active_ids: array<u32>; // [1 + ne]
@group(0) @binding(5) var<storage, read_write> mask: array<u32>; // [ceil(ne / 32)]

var<workgroup> partial: array<f32, 256>;

@compute @workgroup_size(256)
fn route(@builtin(local_invocation_index) lid: u32) {
    var acc = 0.0;
    for (var e = lid; e < p.ne; e += WG) {
        let v = max(a[e], 0.0);
        acc += select(v, v * v, p.norm == 1u);
    }
    partial[lid] = acc;
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        workgroupBarrier();
        if (lid < s) {
            partial[lid] += partial[lid + s];
        }
    }
    workgroupBarrier();
    let total = partial[0];
    for (var e = lid; e < p.ne; e += WG) {
        let v = select(0.0, a[e], a[e] > 0.0);
        var sc = v;
        if (p.norm == 1u) {
            sc = v * (1.0 / sqrt(total / f32(p.ne) + p.eps)) * g[e];
        } else if (p.norm == 2u) {
            sc = v / (total * p.norm_scale + 1e-5);
        }
        scores[e] = sc;
    }
    // Compaction, ascending: one thread (ne is at most a few hundred experts).
    if (lid == 0u) {
        var n = 0u;
        for (var wd = 0u; wd < (p.ne + 31u) / 32u; wd++) {
            var bits = 0u;
            for (var j = 0u; j < 32u; j++) {
                let e = wd * 32u + j;
                if (e < p.ne && a[e] > 0.0) {
                    bits |= 1u << j;
                    active_ids[1u + n] = e;
                    n++;
                }
            }
            mask[wd] = bits;
        }
        active_ids[0] = n;
    }
}
