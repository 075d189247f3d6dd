// o_h = W_vb,h c̄_h for every head: out row h · vdim + i is kv_b row h · (nope + vdim) + nope + i
// times head h's c̄ — the twin of kernels::scalar::matvec on each head's value rows. A workgroup
// takes ROWS rows of one head of one token of the span (workgroup y; vdim a multiple of ROWS).
// Row dot products: rows.wgsl.

struct Params {
    heads: u32,
    nope: u32,
    vdim: u32,
    r: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> w: array<u32>;
@group(0) @binding(2) var<storage, read> x: array<f32>; // c̄ [k, heads, r]
@group(0) @binding(3) var<storage, read_write> y: array<f32>; // [k, heads, vdim]
@group(0) @binding(4) var<storage, read> wscale: array<f32>;
@group(0) @binding(5) var<storage, read> qx: array<u32>;
@group(0) @binding(6) var<storage, read> sx: array<f32>;

@compute @workgroup_size(256)
fn mla_out(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let first = wid.x * ROWS; // output row, within [0, heads · vdim)
    let h = first / p.vdim;
    let xoff = (wid.y * p.heads + h) * p.r;
    prologue_DT(p.r, xoff, lid);
    for (var r = 0u; r < ROWS; r++) {
        let i = first + r - h * p.vdim;
        partial[r * WG + lid] = partial_DT(h * (p.nope + p.vdim) + p.nope + i, p.r, xoff, lid);
    }
    reduce_rows(lid);
    if (lid < ROWS) {
        y[wid.y * p.heads * p.vdim + first + lid] = partial[lid * WG];
    }
}
