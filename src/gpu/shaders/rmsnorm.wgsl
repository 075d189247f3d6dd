// RMSNorm of one vector: out = x · 1/sqrt(mean(x²) + eps) · w — the twin of
// kernels::scalar::rmsnorm. One workgroup: a strided sum of squares, a shared-memory tree, then
// every thread scales its share.

const WG: u32 = 256u;

struct Params {
    n: u32,
    eps: f32,
    _a: u32,
    _b: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

var<workgroup> partial: array<f32, 256>;

@compute @workgroup_size(256)
fn rmsnorm(@builtin(local_invocation_index) lid: u32) {
    var acc = 0.0;
    for (var i = lid; i < p.n; i += WG) {
        acc += x[i] * x[i];
    }
    partial[lid] = acc;
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        workgroupBarrier();
        if (lid < s) {
            partial[lid] += partial[lid + s];
        }
    }
    workgroupBarrier();
    let inv = 1.0 / sqrt(partial[0] / f32(p.n) + p.eps);
    for (var i = lid; i < p.n; i += WG) {
        out[i] = x[i] * inv * w[i];
    }
}
