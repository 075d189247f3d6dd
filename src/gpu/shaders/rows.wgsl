// Row dot products, prepended (after elems.wgsl) to the kernels that take them (matvec, chunk_up).
// Not a kernel.
// Each `partial_DT` returns one thread's strided share of (row of W) · x, f32 accumulation; the
// pipeline builder picks the dtype by replacing `_DT(` with `_f32(`, `_f16(`, `_bf16(` or `_q8(`.
// The including shader declares the globals read here: `w: array<u32>` (the weights as 32-bit
// words), `x: array<f32>`; q8 also `wscale` (one scale per 32 weights), `qx` (the input quantized
// per block by quantize_q8.wgsl, four int8 per word) and `sx` (its block scales; a negative one
// marks a block with a non-finite value, and then the exact dequantized product is used for the
// whole vector, as on the CPU).

const WG: u32 = 256u;

var<private> q8_exact: bool;
var<workgroup> q8_nonfinite: atomic<u32>;

// Called once at the top of a kernel, in uniform control flow.
fn prologue_f32(cols: u32, xoff: u32, lid: u32) {}
fn prologue_f16(cols: u32, xoff: u32, lid: u32) {}
fn prologue_bf16(cols: u32, xoff: u32, lid: u32) {}
fn prologue_q8(cols: u32, xoff: u32, lid: u32) {
    for (var b = lid; b < cols / 32u; b += WG) {
        if (sx[xoff / 32u + b] < 0.0) {
            atomicOr(&q8_nonfinite, 1u);
        }
    }
    workgroupBarrier();
    q8_exact = atomicLoad(&q8_nonfinite) != 0u;
}

fn partial_f32(row: u32, cols: u32, xoff: u32, lid: u32) -> f32 {
    var acc = 0.0;
    let base = row * cols;
    for (var c = lid; c < cols; c += WG) {
        acc += bitcast<f32>(w[base + c]) * x[xoff + c];
    }
    return acc;
}

fn partial_f16(row: u32, cols: u32, xoff: u32, lid: u32) -> f32 {
    var acc = 0.0;
    let words = cols / 2u;
    let base = row * words;
    for (var k = lid; k < words; k += WG) {
        let v = unpack2x16float(w[base + k]);
        acc += v.x * x[xoff + 2u * k];
        acc += v.y * x[xoff + 2u * k + 1u];
    }
    return acc;
}

fn partial_bf16(row: u32, cols: u32, xoff: u32, lid: u32) -> f32 {
    var acc = 0.0;
    let words = cols / 2u;
    let base = row * words;
    for (var k = lid; k < words; k += WG) {
        let v = w[base + k];
        acc += bitcast<f32>(v << 16u) * x[xoff + 2u * k];
        acc += bitcast<f32>(v & 0xffff0000u) * x[xoff + 2u * k + 1u];
    }
    return acc;
}

// One thread takes whole 32-weight blocks, as the CPU sums them: an exact integer block sum times
// (weight scale · input scale), or the exact dequantized path for a non-finite input.
fn partial_q8(row: u32, cols: u32, xoff: u32, lid: u32) -> f32 {
    var acc = 0.0;
    let nb = cols / 32u;
    for (var b = lid; b < nb; b += WG) {
        let s = wscale[row * nb + b];
        let wbase = (row * cols + b * 32u) / 4u;
        if (q8_exact) {
            var fsum = 0.0;
            for (var k = 0u; k < 8u; k++) {
                let v = w[wbase + k];
                for (var j = 0u; j < 4u; j++) {
                    fsum += f32(i8_at(v, j)) * x[xoff + b * 32u + 4u * k + j];
                }
            }
            acc += s * fsum;
        } else {
            var isum = 0;
            for (var k = 0u; k < 8u; k++) {
                let v = w[wbase + k];
                let q = qx[xoff / 4u + b * 8u + k];
                for (var j = 0u; j < 4u; j++) {
                    isum += i8_at(v, j) * i8_at(q, j);
                }
            }
            acc += (s * sx[xoff / 32u + b]) * f32(isum);
        }
    }
    return acc;
}

// Adds the ROWS × WG shares in `partial` (row r at r · WG): afterwards partial[r · WG] is row r's sum.
const ROWS: u32 = 4u;
var<workgroup> partial: array<f32, 1024>; // ROWS * WG

fn reduce_rows(lid: u32) {
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        workgroupBarrier();
        if (lid < s) {
            for (var r = 0u; r < ROWS; r++) {
                partial[r * WG + lid] += partial[r * WG + lid + s];
            }
        }
    }
    workgroupBarrier();
}
