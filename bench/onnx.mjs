// A minimal ONNX writer for the peer benchmark: one MatMul `Y[1,N] = X[1,K] · W[K,N]` with W as
// an f32 initializer, encoded as protobuf by hand (ModelProto → GraphProto, SPEC of onnx.proto).

function varint(n) {
  const out = [];
  let v = BigInt(n);
  do {
    let b = Number(v & 0x7fn);
    v >>= 7n;
    if (v) b |= 0x80;
    out.push(b);
  } while (v);
  return out;
}

const enc = new TextEncoder();

/** Concatenates protobuf fields; each field is [number, wireType, value]. */
function msg(fields) {
  const parts = [];
  for (const [num, wire, value] of fields) {
    parts.push(Uint8Array.from(varint((num << 3) | wire)));
    if (wire === 0) parts.push(Uint8Array.from(varint(value)));
    else {
      const bytes = typeof value === 'string' ? enc.encode(value) : value;
      parts.push(Uint8Array.from(varint(bytes.length)), bytes);
    }
  }
  const len = parts.reduce((a, p) => a + p.length, 0);
  const out = new Uint8Array(len);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

const FLOAT = 1;

function valueInfo(name, dims) {
  const shape = msg(dims.map((d) => [1, 2, msg([[1, 0, d]])]));
  const tensorType = msg([[1, 0, FLOAT], [2, 2, shape]]);
  return msg([[1, 2, name], [2, 2, msg([[1, 2, tensorType]])]]);
}

/** ONNX bytes of `Y = X · W`, W `[k, n]` row-major f32. */
export function matmulModel(k, n, w) {
  const init = msg([[1, 0, k], [1, 0, n], [2, 0, FLOAT], [8, 2, 'W'], [9, 2, new Uint8Array(w.buffer, w.byteOffset, w.byteLength)]]);
  const node = msg([[1, 2, 'X'], [1, 2, 'W'], [2, 2, 'Y'], [3, 2, 'matmul'], [4, 2, 'MatMul']]);
  const graph = msg([[1, 2, node], [2, 2, 'gemv'], [5, 2, init], [11, 2, valueInfo('X', [1, k])], [12, 2, valueInfo('Y', [1, n])]]);
  return msg([[1, 0, 8], [8, 2, msg([[1, 2, ''], [2, 0, 17]])], [7, 2, graph]]);
}
