// q_abs,h = W_kb,hᵀ q_nope,h for every head (MLA with absorbed up-projections) — the twin of
// kernels::scalar::axpy_rows over the nope rows of kv_b (zero coefficients skipped, rows in order).
// kv_b is `[heads · (nope + vdim), r]`; head h's key rows are h · (nope + vdim) .. + nope.
// One thread per (latent component, head, token of the span). Element access: elems.wgsl.

struct Params {
    heads: u32,
    nope: u32,
    vdim: u32,
    r: u32,
    qhd: u32, // the q row per head (nope + rope)
    _a: u32,
    _b: u32,
    _c: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> w: array<u32>;
@group(0) @binding(2) var<storage, read> q: array<f32>; // [k, heads, qhd]
@group(0) @binding(3) var<storage, read_write> qabs: array<f32>; // [k, heads, r]
@group(0) @binding(4) var<storage, read> wscale: array<f32>;

@compute @workgroup_size(64)
fn mla_absorb(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c = gid.x;
    let h = gid.y;
    let qh = gid.z * p.heads + h;
    if (c < p.r && h < p.heads) {
        var acc = 0.0;
        for (var i = 0u; i < p.nope; i++) {
            let coeff = q[qh * p.qhd + i];
            if (coeff != 0.0) {
                acc += axpy_term_DT(coeff, (h * (p.nope + p.vdim) + i) * p.r + c);
            }
        }
        qabs[qh * p.r + c] = acc;
    }
}
