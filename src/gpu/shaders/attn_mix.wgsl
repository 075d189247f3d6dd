// The probability-weighted sum of cached rows, every head and query token at once — the twin of
// kernels::scalar::axpy_rows_dense over the cache (cpu::mla: c̄_h = Σ_t p_h,t c_t) and of the value
// sum in cpu::gqa (o_h = Σ_t p_h,t v_t,kvh), positions in order. Query token i (grid z) sums over
// t ≤ step.pos0 + i. One thread per (component, head, query).

struct Params {
    _t: u32,
    heads: u32,
    dim: u32,      // MLA: kv_lora_rank; GQA: head_dim
    kv_heads: u32, // GQA only
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> probs: array<f32>; // [k, heads, step.t_len]
@group(0) @binding(2) var<storage, read> rows: array<f32>;  // MLA: latent [T, r]; GQA: v [T, kv_heads · hd]
@group(0) @binding(3) var<storage, read_write> out: array<f32>; // [k, heads, dim]

@compute @workgroup_size(64)
fn mla_mix(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c = gid.x;
    let h = gid.y;
    let i = gid.z;
    if (c < p.dim && h < p.heads) {
        let qh = i * p.heads + h;
        var acc = 0.0;
        for (var t = 0u; t <= step.pos0 + i; t++) {
            acc += probs[qh * step.t_len + t] * rows[t * p.dim + c];
        }
        out[qh * p.dim + c] = acc;
    }
}

@compute @workgroup_size(64)
fn gqa_mix(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c = gid.x;
    let h = gid.y;
    let i = gid.z;
    if (c < p.dim && h < p.heads) {
        let qh = i * p.heads + h;
        let kvh = h / (p.heads / p.kv_heads);
        var acc = 0.0;
        for (var t = 0u; t <= step.pos0 + i; t++) {
            acc += probs[qh * step.t_len + t] * rows[t * p.kv_heads * p.dim + kvh * p.dim + c];
        }
        out[qh * p.dim + c] = acc;
    }
}
