// The lower half of the expert panel: what sparse execution saved versus dense (from the package's
// cost model), CLS_L against L with the independent-tokens reference, and expert usage over time
// for one layer (tokens × experts on a canvas).

import { CLS_WINDOWS, costModel, expertSavings, independentCls, isExpertActive } from '../../js/index.js';
import { $ } from '../dom.js';
import { fmtBytes, fmtFlops, fmtPct } from '../format.js';

/** @param {{ state: any, heatmap: any, focusToken: (strip: Element, t: number) => void }} ctx */
export function createPlots(ctx) {
  const { state } = ctx;
  let usageCellWidth = 4;

  /** A model was loaded: the layer picker and the cost model's summary. */
  function modelChanged(info) {
    const sel = $('usage-layer');
    sel.replaceChildren(...Array.from({ length: info.numLayers }, (_, l) => new Option(String(l), String(l))));
    state.layer = Math.min(state.layer, info.numLayers - 1);
    sel.value = String(state.layer);
    const cost = info.experts.count ? costModel(info) : null;
    $('cost-help').textContent = cost
      ? `Estimates from the model's shapes: an expert of one layer is ${cost.expertParams.toLocaleString()} weights ` +
        `(${fmtFlops(cost.flopsPerExpert)} and ${fmtBytes(cost.bytesPerExpert)} in ${info.dtype} per token); the whole model ` +
        `is about ${fmtFlops(cost.denseFlopsPerToken)} per token. Router, attention and norms run in both modes.`
      : 'This model has a dense FFN: there are no experts to skip.';
  }

  /** Generation `g` (null: nothing to show) viewed at token `t`, inside chunk `ch` (chunkOf). */
  function render(g, t, ch) {
    const L = state.L;
    $('s-chunk-label').textContent = `Weights read in chunks of ${L} (each expert of a chunk once)`;
    if (!g) {
      for (const id of ['s-blocks', 's-flops', 's-bytes', 's-chunk']) $(id).textContent = '–';
      renderClsPlot(null, null);
      renderUsage(null, -1, null);
      return;
    }
    const sv = expertSavings(g.masks, state.info, L);
    const dense = g.mode === 'dense';
    $('s-blocks').textContent = `${sv.skipped.toLocaleString()} of ${sv.blocks.toLocaleString()} (${fmtPct(sv.skippedShare)})${dense ? ' could be' : ''}`;
    $('s-flops').textContent = `${fmtFlops(sv.flopsSaved)} of ${fmtFlops(sv.flopsDense)} in experts; ≈${fmtPct(sv.flopsShareOfModel)} of the whole model's`;
    $('s-bytes').textContent = `${fmtBytes(sv.bytesSkipped)} of ${fmtBytes(sv.bytesDense)} (${fmtPct(sv.bytesDense ? sv.bytesSkipped / sv.bytesDense : 0)})`;
    $('s-chunk').textContent =
      `${fmtBytes(sv.chunkBytesRead)} instead of ${fmtBytes(sv.chunkBytesDense)} over ${sv.chunks} chunk${sv.chunks === 1 ? '' : 's'} ` +
      `(${fmtPct(sv.chunkBytesDense ? 1 - sv.chunkBytesRead / sv.chunkBytesDense : 0)} saved)`;
    $('savings').dataset.mode = g.mode;
    renderClsPlot(g, g.stats || {});
    renderUsage(g, t, ch);
  }

  // CLS_L against L (log2 axis), with the independent-tokens reference and TLS.
  function renderClsPlot(g, s) {
    const svg = $('cls-plot');
    const W = 360;
    const H = 200;
    const m = { l: 40, r: 12, t: 12, b: 32 };
    const x = (L) => m.l + (Math.log2(L) / 6) * (W - m.l - m.r);
    const y = (v) => m.t + (1 - v) * (H - m.t - m.b);
    const parts = [];
    for (const v of [0, 0.25, 0.5, 0.75, 1]) {
      parts.push(`<line class="grid" x1="${m.l}" x2="${W - m.r}" y1="${y(v)}" y2="${y(v)}"/>`);
      parts.push(`<text class="tick" x="${m.l - 6}" y="${y(v) + 4}" text-anchor="end">${Math.round(v * 100)}%</text>`);
    }
    for (const L of CLS_WINDOWS) {
      parts.push(`<text class="tick" x="${x(L)}" y="${H - m.b + 16}" text-anchor="middle">${L}</text>`);
    }
    parts.push(`<text class="axis" x="${(m.l + W - m.r) / 2}" y="${H - 2}" text-anchor="middle">chunk size L (tokens)</text>`);
    parts.push(`<line class="sel" x1="${x(state.L)}" x2="${x(state.L)}" y1="${m.t}" y2="${H - m.b}"/>`);
    let label = 'No tokens yet.';
    if (g && s && s.cls) {
      const info = state.info;
      // The reference only where this reply has a full chunk of that size.
      const ind = independentCls(g.masks, info.numLayers, info.experts.count);
      for (const L of CLS_WINDOWS) if (s.cls[L] === null || s.cls[L] === undefined) ind[L] = null;
      const line = (vals, cls) => {
        const pts = CLS_WINDOWS.filter((L) => vals[L] !== null && vals[L] !== undefined).map((L) => [x(L), y(vals[L])]);
        if (pts.length === 0) return;
        parts.push(`<polyline class="${cls}" points="${pts.map((p) => p.join(',')).join(' ')}"/>`);
        if (cls === 'cls') for (const [px, py] of pts) parts.push(`<circle class="cls" cx="${px}" cy="${py}" r="3"/>`);
      };
      if (s.tls !== null && s.tls !== undefined) {
        parts.push(`<line class="tls" x1="${m.l}" x2="${W - m.r}" y1="${y(s.tls)}" y2="${y(s.tls)}"/>`);
        parts.push(`<text class="tick tls-t" x="${W - m.r}" y="${y(s.tls) - 4}" text-anchor="end">TLS ${fmtPct(s.tls)}</text>`);
      }
      line(ind, 'ind');
      line(s.cls, 'cls');
      const known = CLS_WINDOWS.filter((L) => s.cls[L] !== null && s.cls[L] !== undefined);
      label = known.length
        ? `CLS by chunk size: ${known.map((L) => `L=${L}: ${fmtPct(s.cls[L])}`).join(', ')}. Independent tokens would give ${known
            .map((L) => `L=${L}: ${fmtPct(ind[L])}`)
            .join(', ')}.`
        : 'Not enough tokens for a full chunk yet.';
    }
    parts.push(
      `<g class="key" transform="translate(${m.l + 8},${H - m.b - 30})"><line class="cls" x1="0" x2="16" y1="0" y2="0"/><text x="20" y="4">this reply</text>` +
        `<line class="ind" x1="0" x2="16" y1="14" y2="14"/><text x="20" y="18">independent tokens</text></g>`,
    );
    svg.innerHTML = parts.join('');
    svg.setAttribute('aria-label', label);
  }

  // Tokens × experts of one layer.
  function renderUsage(g, t, ch) {
    const canvas = $('usage');
    const scroll = $('usage-scroll');
    const info = state.info;
    const E = info ? info.experts.count : 0;
    const n = g ? g.ids.length : 0;
    const avail = Math.max(100, scroll.clientWidth - 2);
    const cw = n ? Math.max(2, Math.min(10, Math.floor(avail / n))) : 4;
    usageCellWidth = cw;
    const chh = E ? Math.max(2, Math.min(6, Math.floor(192 / E))) : 4;
    const cssW = Math.max(avail, n * cw);
    const cssH = Math.max(1, E) * chh;
    const dpr = window.devicePixelRatio || 1;
    if (canvas.width !== Math.round(cssW * dpr) || canvas.height !== Math.round(cssH * dpr)) {
      canvas.width = Math.round(cssW * dpr);
      canvas.height = Math.round(cssH * dpr);
      canvas.style.width = `${cssW}px`;
      canvas.style.height = `${cssH}px`;
    }
    const ctx2d = canvas.getContext('2d');
    ctx2d.setTransform(dpr, 0, 0, dpr, 0, 0);
    const css = getComputedStyle(document.documentElement);
    ctx2d.fillStyle = css.getPropertyValue('--usage-bg') || '#f4f4f6';
    ctx2d.fillRect(0, 0, cssW, cssH);
    if (!g || !E || n === 0) {
      canvas.setAttribute('aria-label', 'No tokens yet');
      return;
    }
    const layer = Math.min(state.layer, info.numLayers - 1);
    const words = info.experts.wordsPerLayer;
    if (ch) {
      ctx2d.fillStyle = css.getPropertyValue('--band') || 'rgba(255,200,0,.25)';
      ctx2d.fillRect(ch.start * cw, 0, (ch.end - ch.start) * cw, cssH);
    }
    ctx2d.fillStyle = css.getPropertyValue('--mark') || '#333';
    let active = 0;
    for (let k = 0; k < n; k++) {
      const mk = g.masks[k];
      if (!mk || !mk.length) continue;
      for (let e = 0; e < E; e++) {
        if (!isExpertActive(mk, words, layer, e)) continue;
        ctx2d.fillRect(k * cw, e * chh, Math.max(1, cw - (cw > 3 ? 1 : 0)), Math.max(1, chh - (chh > 2 ? 1 : 0)));
        active++;
      }
    }
    ctx2d.strokeStyle = css.getPropertyValue('--chunk-line') || '#888';
    ctx2d.lineWidth = 1;
    ctx2d.beginPath();
    for (let s = 1; s < n; s += state.L) {
      ctx2d.moveTo(s * cw + 0.5, 0);
      ctx2d.lineTo(s * cw + 0.5, cssH);
    }
    ctx2d.stroke();
    if (t >= 0) {
      ctx2d.strokeStyle = css.getPropertyValue('--accent') || '#06c';
      ctx2d.lineWidth = 1.5;
      ctx2d.strokeRect(t * cw + 0.75, 0.75, cw - 1.5, cssH - 1.5);
    }
    canvas.setAttribute(
      'aria-label',
      `Layer ${layer}: ${n} tokens, on average ${(active / n).toFixed(1)} of ${E} experts active per token`,
    );
    if (!state.pin && !state.hover) scroll.scrollLeft = scroll.scrollWidth;
  }

  function wire() {
    $('usage-layer').addEventListener('change', (e) => {
      state.layer = Number(e.target.value);
      ctx.heatmap.renderPanel();
    });
    $('usage').addEventListener('click', (ev) => {
      const { g } = ctx.heatmap.viewed();
      if (!g || !g.ids.length) return;
      const rect = ev.currentTarget.getBoundingClientRect();
      const t = Math.floor((ev.clientX - rect.left) / usageCellWidth);
      if (t >= 0 && t < g.ids.length) ctx.focusToken(g.strip, t);
    });
  }

  return { modelChanged, render, wire };
}
