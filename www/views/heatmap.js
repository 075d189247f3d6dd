// The expert panel: the layers × experts heatmap of the chunk holding the viewed token (built once
// per model, updated in place), its legend and caption, the engine's running metrics, and the
// viewed token's experts (detail list and the live announcement). It hands the rest of the panel
// (savings, CLS plot, usage over time) to the plots view.

import { chunkCounts, chunkOf, isExpertActive, unpackExperts } from '../../js/index.js';
import { $ } from '../dom.js';
import { fmtPct, rampColor } from '../format.js';

function labelCell(text, cls, title) {
  const d = document.createElement('div');
  d.className = `lab ${cls}`;
  d.textContent = text;
  if (title) d.title = title;
  return d;
}

/** @param {{ state: any, plots: any }} ctx */
export function createHeatmap(ctx) {
  const { state } = ctx;
  let cells = [];
  let rowTotals = [];
  let prevCounts = null;
  let prevMark = null;
  let legendFor = 0;

  /** The generation and token the panel shows: hovered, else pinned, else the latest token. */
  function viewed() {
    const v = state.hover || state.pin;
    if (v && state.gens[v.gen]) return { g: state.gens[v.gen], t: v.token, pinned: true };
    for (let i = state.gens.length - 1; i >= 0; i--) {
      const g = state.gens[i];
      if (g.ids.length) return { g, t: g.ids.length - 1, pinned: false };
    }
    return { g: null, t: -1, pinned: false };
  }

  function build(info) {
    const hm = $('heatmap');
    const E = info.experts.count;
    const Lyr = info.numLayers;
    hm.style.setProperty('--experts', String(E));
    const frag = document.createDocumentFragment();
    cells = [];
    rowTotals = [];
    if (E === 0) {
      hm.replaceChildren();
      hm.classList.add('none');
      return;
    }
    hm.classList.remove('none');
    // Column header: every 8th expert id.
    frag.append(labelCell('', 'corner'));
    for (let e = 0; e < E; e++) frag.append(labelCell(e % 8 === 0 ? String(e) : '', 'col'));
    frag.append(labelCell('∪', 'col total', 'experts in the chunk’s union'));
    for (let l = 0; l < Lyr; l++) {
      frag.append(labelCell(`L${l}`, 'row'));
      for (let e = 0; e < E; e++) {
        const c = document.createElement('div');
        c.className = 'cell';
        c.dataset.layer = String(l);
        c.dataset.expert = String(e);
        c.dataset.count = '0';
        frag.append(c);
        cells.push(c);
      }
      const tot = labelCell('0', 'total');
      rowTotals.push(tot);
      frag.append(tot);
    }
    hm.replaceChildren(frag);
    prevCounts = null;
    prevMark = null;
  }

  function renderLegend(L) {
    if (legendFor === L) return;
    legendFor = L;
    const items = [];
    const add = (bg, label, cls = '') => {
      const s = document.createElement('span');
      s.className = 'key';
      const sw = document.createElement('i');
      sw.className = `sw ${cls}`;
      if (bg) sw.style.background = bg;
      s.append(sw, document.createTextNode(label));
      items.push(s);
    };
    add('', 'unused', 'empty');
    const steps = L <= 4 ? Array.from({ length: L }, (_, i) => i + 1) : [1, Math.round(L / 4), Math.round(L / 2), L];
    for (const k of [...new Set(steps)]) add(rampColor(k / L), `${k} of ${L} token${L > 1 ? 's' : ''}`);
    add('', 'this token', 'dot');
    $('legend').replaceChildren(...items);
  }

  function renderPanel() {
    const info = state.info;
    const L = state.L;
    const { g, t, pinned } = viewed();
    renderLegend(L);
    $('m-cls-label').innerHTML = `CLS<sub>${L}</sub>`;
    if (!info || !g || g.ids.length === 0 || info.experts.count === 0) {
      state.heat = null;
      for (const c of cells) {
        if (c.dataset.count !== '0' || c.className !== 'cell') {
          c.dataset.count = '0';
          c.className = 'cell';
          c.style.background = '';
        }
      }
      for (const r of rowTotals) r.textContent = '0';
      prevCounts = prevMark = null;
      $('chunk-caption').textContent = info && info.experts.count === 0 ? 'This model has no experts (dense FFN).' : 'No tokens yet.';
      $('heatmap').setAttribute('aria-label', 'No tokens yet');
      $('token-detail').replaceChildren();
      for (const id of ['m-tls', 'm-cls', 'm-reuse', 'm-tokens', 'm-speed', 'm-mode']) $(id).textContent = '–';
      ctx.plots.render(null, -1, null);
      return;
    }
    const E = info.experts.count;
    const Lyr = info.numLayers;
    const words = info.experts.wordsPerLayer;
    const n = g.ids.length;
    // With "verified span": the span of the speculative step that produced token t — the experts
    // its one forward read (rejected drafts' included) — instead of a fixed window of L tokens.
    const step = $('span-view').checked && g.steps ? g.steps.find((s) => t >= s.start && t < s.start + s.n) : null;
    const ch = step ? { index: 0, start: step.start, end: step.start + step.n, full: true } : chunkOf(t, L, n);
    const counts = chunkCounts(g.masks, ch.start, ch.end, Lyr, E);
    const ramp = step ? step.drafted + 1 : L;
    const read = (l, e) => (step ? isExpertActive(step.unionMask, words, l, e) : false);
    const mark = g.masks[t];
    const bit = (l, e) => (mark && mark.length && isExpertActive(mark, words, l, e) ? 1 : 0);
    const size = ch.end - ch.start;
    // cells
    let union = 0;
    for (let l = 0; l < Lyr; l++) {
      let rowUnion = 0;
      for (let e = 0; e < E; e++) {
        const i = l * E + e;
        const v = counts[i];
        // Read by the verification for a rejected draft only.
        const rejectedOnly = v === 0 && read(l, e);
        if (v > 0 || rejectedOnly) rowUnion++;
        const on = bit(l, e);
        const key = step ? `s${step.start}` : L;
        if (prevCounts && prevCounts[i] === v && prevMark[i] === on && prevCounts.L === key && !rejectedOnly) continue;
        const c = cells[i];
        c.dataset.count = String(v);
        c.className = `cell${v > 0 ? ' u' : ''}${on ? ' t' : ''}${rejectedOnly ? ' r' : ''}`;
        c.style.background = v > 0 ? rampColor(v / ramp) : '';
      }
      union += rowUnion;
      rowTotals[l].textContent = String(rowUnion);
    }
    prevCounts = counts;
    prevCounts.L = step ? `s${step.start}` : L;
    prevMark = new Uint8Array(Lyr * E);
    for (let l = 0; l < Lyr; l++) for (let e = 0; e < E; e++) prevMark[l * E + e] = bit(l, e);
    const total = Lyr * E;
    const where = step
      ? `the span verified at token ${ch.start + 1}: its token, ${step.accepted} of ${step.drafted} drafts accepted (outlined: read for rejected drafts)`
      : ch.index < 0
        ? `the first token (CLS starts after it)`
        : `chunk ${ch.index + 1}: tokens ${ch.start + 1}–${ch.end}${ch.full ? '' : ` (${size} of ${L} so far)`}`;
    const cap = `Reply ${g.n + 1}, ${where}. Union: ${union} of ${total} expert blocks (${fmtPct(1 - union / total)} untouched).`;
    $('chunk-caption').textContent = cap;
    $('heatmap').setAttribute('aria-label', cap);
    $('heatmap').dataset.gen = String(g.n);
    $('heatmap').dataset.start = String(ch.start);
    $('heatmap').dataset.end = String(ch.end);
    $('heatmap').dataset.token = String(t);
    $('heatmap').dataset.chunkSize = String(L);
    $('viz-source').textContent = pinned
      ? `Showing token ${t + 1} of reply ${g.n + 1} (${g.mode}). Move the pointer or the focus off the tokens to follow the latest one.`
      : `Showing the latest token of reply ${g.n + 1} (${g.mode}); hover or focus a token under a reply to inspect it.`;
    state.heat = { gen: g.n, token: t, L, start: ch.start, end: ch.end, union, counts: Array.from(counts), span: !!step };

    renderTokenDetail(g, t);
    // metrics: the engine's running statistics
    const s = g.stats || {};
    $('m-tls').textContent = fmtPct(s.tls);
    $('m-cls').textContent = fmtPct(s.cls ? s.cls[L] : null);
    $('m-reuse').textContent = fmtPct(s.reuse);
    $('m-tokens').textContent = String(n);
    $('m-speed').textContent = s.tokensPerSecond ? `${s.tokensPerSecond.toFixed(1)} tok/s` : '–';
    $('m-mode').textContent = g.mode;
    ctx.plots.render(g, t, ch);
  }

  function renderTokenDetail(g, t) {
    const info = state.info;
    const lists = unpackExperts(g.masks[t] ?? [], info.experts.wordsPerLayer, info.numLayers);
    const count = lists.reduce((a, x) => a + x.length, 0);
    const head = document.createElement('p');
    head.className = 'detail-head';
    const tok = document.createElement('code');
    tok.textContent = JSON.stringify(g.pieces[t] ?? '');
    head.append(`Token ${t + 1} `, tok, ` (id ${g.ids[t]}): ${count} of ${info.numLayers * info.experts.count} experts active`);
    const ol = document.createElement('ol');
    ol.className = 'layers';
    ol.start = 0;
    lists.forEach((ids, l) => {
      const li = document.createElement('li');
      li.textContent = `L${l}: ${ids.length ? ids.join(' ') : '—'}`;
      ol.append(li);
    });
    if (!g.masks[t] || g.masks[t].length === 0) head.append(' (not run: it filled the context)');
    $('token-detail').replaceChildren(head, ol);
  }

  /** Announces a focused token's experts per layer to screen readers. */
  function announceToken(g, t) {
    const info = state.info;
    const lists = unpackExperts(g.masks[t] ?? [], info.experts.wordsPerLayer, info.numLayers);
    $('token-live').textContent =
      `Token ${t + 1}, ${JSON.stringify(g.pieces[t])}: ` + lists.map((ids, l) => `layer ${l}: ${ids.length ? ids.join(', ') : 'none'}`).join('; ');
  }

  return { build, renderPanel, viewed, announceToken };
}
