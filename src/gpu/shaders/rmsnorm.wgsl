// RMSNorm of rows: out_i = x_i · 1/sqrt(mean(x_i²) + eps) · w / div — the twin of
// kernels::scalar::rmsnorm (then ÷ div, as the LM head's input is; div = 1 elsewhere). One
// workgroup per row: a strided sum of squares, a shared-memory tree, then every thread scales its
// share. Row r of the dispatch reads input row r (+ step.head_from when `from_head` is set, the
// final norm of the logits' positions) at `in_stride`, writes output row r at `out_stride`.

const WG: u32 = 256u;

struct Params {
    n: u32,
    eps: f32,
    in_stride: u32,
    out_stride: u32,
    div: f32,
    from_head: u32,
    _a: u32,
    _b: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

var<workgroup> partial: array<f32, 256>;

@compute @workgroup_size(256)
fn rmsnorm(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = wid.x + select(0u, step.head_from, p.from_head == 1u);
    let xo = row * p.in_stride;
    let oo = wid.x * p.out_stride;
    var acc = 0.0;
    for (var i = lid; i < p.n; i += WG) {
        acc += x[xo + i] * x[xo + i];
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
        out[oo + i] = x[xo + i] * inv * w[i] / p.div;
    }
}
