// In-place softmax of rows — the twin of kernels::scalar::softmax: subtract the maximum,
// exponentiate, divide by the sum. One workgroup per row, shared-memory trees for the max and the
// sum. Plain rows (causal = 0): row i is n values at i · n. Attention rows (causal = 1): the
// `[k, heads, step.t_len]` scores, row i belonging to query token i / heads, which sees
// step.pos0 + i / heads + 1 positions.

const WG: u32 = 256u;

struct Params {
    n: u32,
    heads: u32,
    causal: u32,
    _c: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;

var<workgroup> partial: array<f32, 256>;

@compute @workgroup_size(256)
fn softmax(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    var o = wid.x * p.n;
    var n = p.n;
    if (p.causal == 1u) {
        o = wid.x * step.t_len;
        n = step.pos0 + wid.x / p.heads + 1u;
    }
    var m = -3.4028234663852886e38;
    for (var i = lid; i < n; i += WG) {
        m = max(m, x[o + i]);
    }
    partial[lid] = m;
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        workgroupBarrier();
        if (lid < s) {
            partial[lid] = max(partial[lid], partial[lid + s]);
        }
    }
    workgroupBarrier();
    let mx = partial[0];
    workgroupBarrier();
    var acc = 0.0;
    for (var i = lid; i < n; i += WG) {
        let e = exp(x[o + i] - mx);
        x[o + i] = e;
        acc += e;
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
    for (var i = lid; i < n; i += WG) {
        x[o + i] = x[o + i] / total;
    }
}
