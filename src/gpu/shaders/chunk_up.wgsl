// u[t, j, :] = silu(W_up[e·de .. (e+1)·de, :] · x_t) · scores[t, e] for every active expert
// e = union[j] — the twin of kernels::scalar::chunk_up, with the union compacted on the GPU by
// route.wgsl (union[0] = count, then the ids). Fixed grid: x covers every possible slot
// (ne · de / ROWS workgroups), y the tokens; a workgroup whose slot is beyond the count returns at
// once (workgroup-uniform: no indirect dispatch, nothing read back). Row dot products: rows.wgsl.
// Dense mode runs the same kernel over the list of all experts with `dense` set.

struct Params {
    cols: u32, // H
    de: u32,   // rows per expert (a multiple of ROWS)
    ne: u32,
    dense: u32, // 1: every listed expert is computed for every token, also at score 0 (dense mode)
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> w: array<u32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;      // [k, H]
@group(0) @binding(3) var<storage, read> scores: array<f32>; // [k, ne]
@group(0) @binding(4) var<storage, read> union_ids: array<u32>;
@group(0) @binding(5) var<storage, read_write> u: array<f32>; // [k, count, de]
@group(0) @binding(6) var<storage, read> wscale: array<f32>;
@group(0) @binding(7) var<storage, read> qx: array<u32>;
@group(0) @binding(8) var<storage, read> sx: array<f32>;

@compute @workgroup_size(256)
fn chunk_up(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let tiles = p.de / ROWS;
    let j = wid.x / tiles;
    let nu = union_ids[0];
    if (j >= nu) {
        return;
    }
    let t = wid.y;
    let e = union_ids[1u + j];
    let score = scores[t * p.ne + e];
    let r0 = (wid.x % tiles) * ROWS;
    let out = (t * nu + j) * p.de + r0;
    if (score == 0.0 && p.dense == 0u) {
        // A token that did not pick e gets exact zeros (no dot products), as on the CPU.
        if (lid < ROWS) {
            u[out + lid] = 0.0;
        }
        return;
    }
    prologue_DT(p.cols, t * p.cols, lid);
    for (var r = 0u; r < ROWS; r++) {
        partial[r * WG + lid] = partial_DT(e * p.de + r0 + r, p.cols, t * p.cols, lid);
    }
    reduce_rows(lid);
    if (lid < ROWS) {
        let v = partial[lid * WG];
        u[out + lid] = v / (1.0 + exp(-v)) * score;
    }
}
