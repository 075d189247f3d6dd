// The package's sparsity code (js/sparsity.js, exported from the package) against the shared
// fixture tests/fixtures/sparsity/sparsity.json, whose numbers src/metrics.rs computed (and
// tests/sparsity_fixture.rs re-checks): TLS, CLS_L and reuse equal to the last bit, masks unpacked
// to the same ids, the page's chunk windows aligned with CLS_L. Also the package's model URL helpers.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { before, describe, test } from 'node:test';

import { ROOT, importPackage } from './helpers.mjs';

const fx = JSON.parse(readFileSync(join(ROOT, 'tests/fixtures/sparsity/sparsity.json'), 'utf8'));
const { layers, experts, wordsPerLayer: words } = fx;
let pkg;

before(async () => {
  pkg = await importPackage();
});

describe('sparsity fixture (numbers from src/metrics.rs)', () => {
  test('the fixture is what it says: 3 layers × 40 experts, 2 words per layer, every window', () => {
    assert.deepEqual([layers, experts, words], [3, 40, 2]);
    assert.deepEqual(fx.windows, [...pkg.CLS_WINDOWS]);
    assert.ok(fx.sequences.length >= 5);
    assert.ok(fx.sequences.some((s) => s.expected.cls['64'] !== null), 'some sequence has a full window of 64');
  });

  for (const s of fx.sequences) {
    test(`${s.name}: TLS, CLS_L and reuse equal the Rust numbers exactly`, () => {
      for (const masks of [s.masks.map((m) => Uint32Array.from(m)), s.masks]) {
        const got = pkg.sparsity(masks, layers, experts);
        // exact: the same integer counts and the same float operations in the same order
        assert.deepStrictEqual(got, s.expected);
      }
    });
  }

  test('masks unpack to the fixture ids; counts and single bits agree', () => {
    const hand = fx.sequences.find((s) => s.sets);
    assert.ok(hand, 'a sequence carries its sets');
    hand.masks.forEach((m, t) => {
      const mask = Uint32Array.from(m);
      assert.deepEqual(pkg.unpackExperts(mask, words), hand.sets[t], `token ${t}`);
      assert.deepEqual(pkg.unpackExperts(mask, words, layers), hand.sets[t]);
      assert.equal(pkg.countExperts(mask), hand.sets[t].flat().length);
      for (let l = 0; l < layers; l++) {
        for (let e = 0; e < experts; e++) assert.equal(pkg.isExpertActive(mask, words, l, e), hand.sets[t][l].includes(e));
      }
    });
    // an empty mask (a token never run): numLayers empty lists when asked for them
    assert.deepEqual(pkg.unpackExperts(new Uint32Array(), words), []);
    assert.deepEqual(pkg.unpackExperts([], words, layers), [[], [], []]);
  });

  test("the page's chunks (chunkOf, chunkCounts) are CLS_L's windows", () => {
    for (const s of fx.sequences) {
      const masks = s.masks.filter((m) => m.length === layers * words);
      const n = masks.length;
      for (const L of fx.windows) {
        let used = 0;
        let total = 0;
        for (let t = 1; t < n; t += L) {
          const ch = pkg.chunkOf(t, L, n);
          assert.equal(ch.start, t);
          if (!ch.full) continue;
          for (const c of pkg.chunkCounts(masks, ch.start, ch.end, layers, experts)) if (c > 0) used++;
          total += layers * experts;
        }
        assert.equal(total ? 1 - used / total : null, s.expected.cls[L], `${s.name}: CLS_${L}`);
      }
    }
  });

  test('the independent-tokens reference at L = 1 is TLS over the tokens after the first', () => {
    for (const s of fx.sequences) {
      const masks = s.masks.filter((m) => m.length === layers * words);
      const ind = pkg.independentCls(masks, layers, experts);
      const tls = pkg.sparsity(masks.slice(1), layers, experts).tls;
      if (tls === null) assert.equal(ind[1], null);
      else assert.ok(Math.abs(ind[1] - tls) < 1e-12, `${s.name}: ${ind[1]} vs ${tls}`);
      for (const L of fx.windows) if (ind[L] !== null) assert.ok(ind[L] >= 0 && ind[L] <= ind[1] + 1e-12);
    }
  });

  test('expertSavings counts the skipped expert blocks of the masks', () => {
    const s = fx.sequences.find((x) => x.name === 'locality-70');
    const info = { numLayers: layers, hiddenSize: 16, params: 10_000, vocabSize: 100, dtype: 'f16', experts: { count: experts, size: 8, wordsPerLayer: words }, config: {} };
    const sv = pkg.expertSavings(s.masks, info, 8);
    assert.equal(sv.tokens, s.masks.length);
    assert.equal(sv.blocks, s.masks.length * layers * experts);
    assert.equal(1 - (sv.blocks - sv.skipped) / sv.blocks, s.expected.tls);
    assert.equal(sv.chunks, 1 + Math.ceil((s.masks.length - 1) / 8));
    assert.equal(pkg.costModel(info).bytesPerExpert, 2 * 8 * 16 * 2);
  });
});

test('model URLs: the directory (trailing slash, …/manifest.json names it) and its files, query kept', () => {
  assert.equal(pkg.modelBaseUrl('https://example.org/m/demo').href, 'https://example.org/m/demo/');
  assert.equal(pkg.modelBaseUrl('https://example.org/m/demo/manifest.json').href, 'https://example.org/m/demo/');
  assert.equal(pkg.modelFileUrl('https://example.org/m/demo/?v=2'), 'https://example.org/m/demo/manifest.json?v=2');
  assert.equal(pkg.modelFileUrl('https://example.org/m/demo/manifest.json', 'config.json'), 'https://example.org/m/demo/config.json');
  assert.throws(() => pkg.modelFileUrl('not a url'), (e) => e instanceof pkg.BlockffnError && e.code === 'InvalidInput');
});
