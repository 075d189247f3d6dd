// In-place softmax of `rows` vectors of n values (row i at i · n) — the twin of
// kernels::scalar::softmax: subtract the maximum, exponentiate, divide by the sum. One workgroup
// per row, shared-memory trees for the max and the sum.

const WG: u32 = 256u;

struct Params {
    n: u32,
    _a: u32,
    _b: u32,
    _c: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;

var<workgroup> partial: array<f32, 256>;

@compute @workgroup_size(256)
fn softmax(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let o = wid.x * p.n;
    var m = -3.40282347e38;
    for (var i = lid; i < p.n; i += WG) {
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
    for (var i = lid; i < p.n; i += WG) {
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
    for (var i = lid; i < p.n; i += WG) {
        x[o + i] = x[o + i] / total;
    }
}
