// y_t = W x_t for one part of a row-major W (rows row0 .. row0 + rows) and every token t of the
// span (workgroup y): the twin of kernels::scalar::matvec. One workgroup computes ROWS consecutive
// rows of one token; each of its WG threads accumulates a strided share of every row (rows.wgsl,
// prepended), then a shared-memory tree adds the shares. Token t reads x at t · cols and writes y
// at t · y_stride.

struct Params {
    rows: u32, // rows in this part
    cols: u32,
    row0: u32, // first row of this part in y
    y_stride: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> w: array<u32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<storage, read> wscale: array<f32>;
@group(0) @binding(5) var<storage, read> qx: array<u32>;
@group(0) @binding(6) var<storage, read> sx: array<f32>;

@compute @workgroup_size(256)
fn matvec(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let xoff = wid.y * p.cols;
    prologue_DT(p.cols, xoff, lid);
    let first = wid.x * ROWS;
    for (var r = 0u; r < ROWS; r++) {
        var acc = 0.0;
        if (first + r < p.rows) {
            acc = partial_DT(first + r, p.cols, xoff, lid);
        }
        partial[r * WG + lid] = acc;
    }
    reduce_rows(lid);
    if (lid < ROWS && first + lid < p.rows) {
        y[wid.y * p.y_stride + p.row0 + first + lid] = partial[lid * WG];
    }
}
