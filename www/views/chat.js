// The chat: messages and bubbles, sending (chat or text continuation), streaming a generation into
// a bubble and its token strip (one chip per token, shaded by how many experts it used), the
// sparse/dense comparison, and keyboard and pointer handling on the strips.

import { chatStops, countExperts, renderChat } from '../../js/index.js';
import { $, clearError, showError } from '../dom.js';
import { fmtPct } from '../format.js';

const SHOW_WS = { ' ': '␣', '\n': '⏎', '\t': '⇥' };
function tokenLabel(piece) {
  if (piece === '') return '·';
  return piece.replace(/[ \n\t]/g, (c) => SHOW_WS[c]);
}

/** A number input's value clamped to [min, max] (written back), `fallback` when it is not a number. */
export function numberInput(id, { min = -Infinity, max = Infinity, integer = false, fallback }) {
  const el = $(id);
  let v = Number(el.value);
  if (el.value.trim() === '' || !Number.isFinite(v)) v = fallback;
  v = Math.min(max, Math.max(min, integer ? Math.round(v) : v));
  el.value = String(v);
  return v;
}

export function radio(name) {
  return document.querySelector(`input[name="${name}"]:checked`).value;
}

function samplingOptions() {
  const temperature = numberInput('temperature', { min: 0, max: 2, fallback: 0.7 });
  const topK = numberInput('top-k', { min: 0, max: 100000, integer: true, fallback: 0 });
  const topP = numberInput('top-p', { min: 0.01, max: 1, fallback: 1 });
  const rep = numberInput('rep', { min: 0.5, max: 3, fallback: 1 });
  const seed = numberInput('seed', { min: 0, max: Number.MAX_SAFE_INTEGER, integer: true, fallback: 0 });
  const maxTokens = numberInput('max-tokens', { min: 1, max: 4096, integer: true, fallback: 96 });
  const o = { maxTokens, seed };
  if (temperature > 0) {
    o.temperature = temperature;
    if (topK > 0) o.topK = topK;
    if (topP < 1) o.topP = topP;
  }
  if (rep !== 1) o.repetitionPenalty = rep;
  const spec = document.querySelector('input[name="spec"]:checked');
  if (spec && spec.value !== 'off') o.speculative = spec.value;
  return o;
}

function emptyLogNote() {
  const p = document.createElement('p');
  p.id = 'empty-log';
  p.className = 'empty-log';
  p.textContent = 'Ask something, or pick Continue text and type the start of a sentence.';
  return p;
}

function addBubble(role, text) {
  $('empty-log').hidden = true;
  const el = document.createElement('div');
  el.className = `msg ${role}`;
  const who = document.createElement('div');
  who.className = 'who';
  who.textContent = { user: 'You', assistant: 'Model', prompt: 'Prompt', continuation: 'Continuation' }[role];
  const body = document.createElement('div');
  body.className = 'text';
  body.textContent = text;
  el.append(who, body);
  $('log').append(el);
  el.scrollIntoView({ block: 'end' });
  return { el, body };
}

function tokenEventTarget(ev) {
  const tok = ev.target.closest && ev.target.closest('.tok');
  if (!tok) return null;
  const strip = tok.parentElement;
  return { tok, strip, gen: Number(strip.dataset.gen), token: Number(tok.dataset.t) };
}

/** Moves the focus to token `t` of a strip (clamped), keeping one tab stop per strip. */
export function focusToken(strip, t) {
  const toks = strip.children;
  if (toks.length === 0) return;
  const i = Math.max(0, Math.min(toks.length - 1, t));
  for (const el of strip.querySelectorAll('.tok[tabindex="0"]')) el.tabIndex = -1;
  toks[i].tabIndex = 0;
  toks[i].focus();
}

/**
 * @param {{ state: any, setBusy: (b: string | null) => void, stopCurrent: () => void, heatmap: any }} ctx
 */
export function createChat(ctx) {
  const { state } = ctx;
  const renderPanel = () => ctx.heatmap.renderPanel();

  /** The latest generation that has a prompt of its own (what Compare reruns). */
  function lastPrompted() {
    for (let i = state.gens.length - 1; i >= 0; i--) if (state.gens[i].promptIds) return state.gens[i];
    return null;
  }

  function newChat() {
    if (state.busy === 'generate' || state.busy === 'compare') ctx.stopCurrent();
    state.messages = [];
    state.gens = [];
    state.hover = state.pin = null;
    state.compare = null;
    $('compare-out').textContent = '';
    $('log').replaceChildren($('empty-log') || emptyLogNote());
    $('empty-log').hidden = false;
    $('speed').textContent = '–';
    ctx.setBusy(state.busy);
    renderPanel();
  }

  /** Renders the chat prompt, dropping the oldest turns while it does not fit in the context. */
  async function chatPrompt(maxTokens) {
    const info = state.info;
    for (;;) {
      const text = renderChat(state.messages, info.chatTemplate);
      const ids = await state.engine.tokenize(text);
      if (ids.length + maxTokens <= info.contextLength || state.messages.length <= 1) return ids;
      state.messages.splice(0, state.messages[0].role === 'user' && state.messages.length > 2 ? 2 : 1);
    }
  }

  async function send() {
    const input = $('prompt');
    const text = input.value;
    if (!text.trim() || state.busy || !state.info) return;
    clearError();
    const kind = radio('kind');
    const mode = radio('mode');
    const opts = samplingOptions();
    input.value = '';
    addBubble(kind === 'chat' ? 'user' : 'prompt', text);
    let promptIds;
    let stop = [];
    try {
      if (kind === 'chat') {
        state.messages.push({ role: 'user', content: text });
        promptIds = await chatPrompt(opts.maxTokens);
        stop = chatStops(state.info.chatTemplate);
      } else {
        promptIds = await state.engine.tokenize(text);
      }
    } catch (e) {
      showError(e);
      return;
    }
    const g = await runGeneration({ kind, mode, promptIds, stop, opts });
    if (kind === 'chat' && g && state.gens[g.n] === g) state.messages.push({ role: 'assistant', content: g.text });
    input.focus();
  }

  function newGen({ kind, mode, promptIds, stop, opts }) {
    const { el, body } = addBubble(kind === 'chat' ? 'assistant' : 'continuation', '');
    el.classList.add('streaming');
    el.setAttribute('aria-busy', 'true'); // screen readers read the reply once, when it is complete
    const strip = document.createElement('div');
    strip.className = 'strip';
    strip.setAttribute('role', 'listbox');
    strip.setAttribute('aria-orientation', 'horizontal');
    strip.setAttribute('aria-label', 'Tokens of this reply: arrow keys move, each token shows its active experts');
    const meta = document.createElement('div');
    meta.className = 'meta';
    el.append(strip, meta);
    const g = {
      n: state.gens.length,
      kind,
      mode,
      promptIds,
      stop,
      opts,
      ids: [],
      masks: [],
      pieces: [],
      drafted: [], // per token: an accepted draft of a speculative step
      steps: [], // speculative steps: { start, n, drafted, accepted, unionMask } over token indices
      text: '',
      stats: null,
      finishReason: null,
      el,
      body,
      strip,
      meta,
      shownTokens: 0,
      shownText: 0,
    };
    strip.dataset.gen = String(g.n);
    state.gens.push(g);
    return g;
  }

  async function runGeneration(spec) {
    const g = newGen(spec);
    state.hover = state.pin = null;
    const ctrl = new AbortController();
    state.abort = ctrl;
    ctx.setBusy('generate');
    try {
      for await (const c of state.engine.generate(g.promptIds, { ...g.opts, stop: g.stop, mode: g.mode, signal: ctrl.signal })) {
        absorb(g, c);
      }
    } catch (e) {
      if (e && e.code === 'Aborted') g.finishReason = 'stopped';
      else {
        g.finishReason = 'error';
        showError(e, 'Generating: ');
      }
    } finally {
      await labelDrafts(g);
      state.abort = null;
      g.el.classList.remove('streaming');
      g.el.removeAttribute('aria-busy');
      ctx.setBusy(null);
      scheduleRender(g, true);
    }
    return g;
  }

  /** Gives the accepted draft tokens of a speculative run their own text (their chunk's went to the first). */
  async function labelDrafts(g) {
    const t = g.drafted.findIndex(Boolean);
    if (t < 0) return;
    try {
      // The text of each run of tokens (a step) is re-cut token by token.
      const pieces = await Promise.all(g.ids.map((id) => state.engine.detokenize([id])));
      let chip = g.strip.firstElementChild;
      for (let i = 0; i < g.ids.length; i++, chip = chip && chip.nextElementSibling) {
        if (g.drafted[i] || (i + 1 < g.ids.length && g.drafted[i + 1])) {
          g.pieces[i] = pieces[i];
          if (chip) chip.textContent = tokenLabel(pieces[i]);
        }
      }
    } catch {
      /* labels only */
    }
  }

  /** Records one engine chunk into a generation (token, its mask, its text piece, stats). */
  function absorb(g, c) {
    if (c.tokenIds.length) {
      // A speculative step brings its token and the drafts it accepted: the chunk's text is
      // theirs together, so it goes on the first chip and the drafts are labelled after the run.
      if (c.speculation) {
        const { drafted, accepted, unionMask } = c.speculation;
        g.steps.push({ start: g.ids.length, n: c.tokenIds.length, drafted, accepted, unionMask: Uint32Array.from(unionMask) });
      }
      c.tokenIds.forEach((id, i) => {
        g.ids.push(id);
        g.masks.push(c.experts[i] ?? new Uint32Array());
        g.pieces.push(i === 0 ? c.text : '');
        g.drafted.push(i > 0);
      });
    } else if (c.text && g.pieces.length) {
      g.pieces[g.pieces.length - 1] += c.text;
    }
    g.text += c.text;
    g.stats = c.stats;
    if (c.finishReason) g.finishReason = c.finishReason;
    scheduleRender(g);
  }

  // Rendering: one pass per animation frame at most.
  let frame = 0;
  const dirty = new Set();
  function scheduleRender(g, now = false) {
    dirty.add(g);
    if (now) {
      cancelAnimationFrame(frame);
      frame = 0;
      flush();
    } else if (!frame) {
      frame = requestAnimationFrame(() => {
        frame = 0;
        flush();
      });
    }
  }

  function flush() {
    for (const g of dirty) renderGen(g);
    dirty.clear();
    renderPanel();
  }

  function renderGen(g) {
    if (g.text.length > g.shownText) {
      g.body.append(document.createTextNode(g.text.slice(g.shownText)));
      g.shownText = g.text.length;
    }
    const info = state.info;
    const maxActive = info ? info.numLayers * info.experts.count : 0;
    for (let t = g.shownTokens; t < g.ids.length; t++) {
      const s = document.createElement('span');
      s.className = 'tok';
      s.setAttribute('role', 'option');
      s.dataset.t = String(t);
      s.tabIndex = t === 0 ? 0 : -1;
      const active = info ? countExperts(g.masks[t]) : 0;
      s.style.setProperty('--a', maxActive ? String(active / maxActive) : '0');
      s.setAttribute('aria-label', `token ${t + 1}: ${JSON.stringify(g.pieces[t])}, ${active} active experts`);
      s.textContent = tokenLabel(g.pieces[t]);
      if (g.drafted[t]) {
        s.classList.add('draft');
        s.title = 'accepted draft token: verified in the same forward as the token before it';
      }
      g.strip.append(s);
    }
    // A piece can grow after its chip was made (text completed by the final chunk).
    if (g.shownTokens > 0 && g.finishReason) {
      const last = g.strip.lastElementChild;
      if (last) last.textContent = tokenLabel(g.pieces[g.pieces.length - 1]);
    }
    g.shownTokens = g.ids.length;
    const s = g.stats;
    const tps = s && s.tokensPerSecond ? s.tokensPerSecond : 0;
    if (!g.finishReason) {
      $('speed').textContent = tps ? tps.toFixed(1) : '–';
      g.meta.textContent = `${g.ids.length} tokens · ${tps ? tps.toFixed(1) : '–'} tok/s · ${g.mode}`;
    } else {
      const why = { length: 'max tokens', eos: 'end of text', stop: 'end of turn', context: 'context full', stopped: 'stopped', error: 'error' }[g.finishReason] ?? g.finishReason;
      const sp = s && s.speculation;
      const specText = sp && sp.verifies + sp.plain > 0
        ? ` · speculative: ${sp.accepted} of ${sp.drafted} drafts accepted, ${((sp.verifies + sp.plain + sp.accepted) / (sp.verifies + sp.plain)).toFixed(2)} tokens per forward, union ${sp.meanUnion.toFixed(1)} experts/layer`
        : '';
      g.meta.textContent =
        `${g.ids.length} tokens · ${tps ? tps.toFixed(1) : '–'} tok/s · ${g.mode} · ${why}` +
        (s && s.tls !== null && s.tls !== undefined ? ` · TLS ${fmtPct(s.tls)}` : '') + specText;
      g.el.dataset.finish = g.finishReason;
      if (tps) $('speed').textContent = tps.toFixed(1);
    }
    if (!state.pin && !state.hover) g.el.scrollIntoView({ block: 'end' });
  }

  // Sparse / dense comparison (greedy, same prompt).
  async function compare() {
    const base = lastPrompted();
    if (!base || state.busy) return;
    clearError();
    const out = $('compare-out');
    const maxTokens = numberInput('max-tokens', { min: 1, max: 4096, integer: true, fallback: 96 });
    const ctrl = new AbortController();
    state.abort = ctrl;
    ctx.setBusy('compare');
    const runs = {};
    out.dataset.identical = '';
    try {
      for (const mode of ['sparse', 'dense']) {
        out.textContent = `Running ${mode}…`;
        const ids = [];
        let text = '';
        let stats = null;
        for await (const c of state.engine.generate(base.promptIds, { maxTokens, stop: base.stop, mode, signal: ctrl.signal })) {
          ids.push(...c.tokenIds);
          text += c.text;
          stats = c.stats;
          out.textContent = `Running ${mode}… ${ids.length} tokens, ${stats.tokensPerSecond.toFixed(1)} tok/s`;
        }
        runs[mode] = { ids, text, tokensPerSecond: stats ? stats.tokensPerSecond : 0 };
      }
      const same = runs.sparse.text === runs.dense.text && runs.sparse.ids.join() === runs.dense.ids.join();
      const sp = runs.sparse.tokensPerSecond;
      const dn = runs.dense.tokensPerSecond;
      state.compare = { ...runs, identical: same, promptIds: base.promptIds, maxTokens };
      out.dataset.identical = String(same);
      out.textContent =
        `Greedy, ${runs.sparse.ids.length} tokens: sparse ${sp.toFixed(1)} tok/s, dense ${dn.toFixed(1)} tok/s` +
        (dn > 0 ? ` (sparse ${(sp / dn).toFixed(2)}× dense)` : '') +
        (same ? '. Identical text and token ids ✓' : `. The outputs differ ✗ (this is a bug; please report it)`);
    } catch (e) {
      if (e && e.code === 'Aborted') out.textContent = 'Comparison stopped.';
      else showError(e, 'Comparing: ');
    } finally {
      state.abort = null;
      ctx.setBusy(null);
    }
  }

  function wire() {
    $('composer').addEventListener('submit', (e) => {
      e.preventDefault();
      send();
    });
    $('prompt').addEventListener('keydown', (e) => {
      if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
        e.preventDefault();
        send();
      }
    });
    $('new-chat').addEventListener('click', () => {
      newChat();
      $('prompt').focus();
    });
    $('compare').addEventListener('click', compare);
    for (const el of document.querySelectorAll('input[name="kind"]')) {
      el.addEventListener('change', () => {
        const chat = radio('kind') === 'chat';
        $('prompt').placeholder = chat
          ? 'Message the model (Enter sends, Shift+Enter for a new line, Esc stops)'
          : 'The start of a text to continue, e.g. “The history of the” (Enter sends)';
      });
    }

    // Token strips: hover previews, focus/click pins, arrow keys move.
    const log = $('log');
    log.addEventListener('mouseover', (ev) => {
      const h = tokenEventTarget(ev);
      if (!h) return;
      state.hover = { gen: h.gen, token: h.token };
      renderPanel();
    });
    log.addEventListener('mouseleave', () => {
      if (state.hover) {
        state.hover = null;
        renderPanel();
      }
    });
    log.addEventListener('mouseout', (ev) => {
      if (state.hover && !(ev.relatedTarget && ev.relatedTarget.closest && ev.relatedTarget.closest('.tok'))) {
        state.hover = null;
        renderPanel();
      }
    });
    log.addEventListener('focusin', (ev) => {
      const h = tokenEventTarget(ev);
      if (!h) return;
      for (const el of h.strip.querySelectorAll('.tok[aria-selected="true"]')) el.removeAttribute('aria-selected');
      for (const el of h.strip.querySelectorAll('.tok[tabindex="0"]')) if (el !== h.tok) el.tabIndex = -1;
      h.tok.tabIndex = 0;
      h.tok.setAttribute('aria-selected', 'true');
      state.pin = { gen: h.gen, token: h.token };
      renderPanel();
      ctx.heatmap.announceToken(state.gens[h.gen], h.token);
    });
    log.addEventListener('focusout', (ev) => {
      const to = ev.relatedTarget;
      if (state.pin && !(to && to.closest && to.closest('.tok'))) {
        state.pin = null;
        renderPanel();
      }
    });
    log.addEventListener('keydown', (ev) => {
      const h = tokenEventTarget(ev);
      if (!h) return;
      const moves = { ArrowRight: 1, ArrowDown: 1, ArrowLeft: -1, ArrowUp: -1, PageDown: state.L, PageUp: -state.L };
      if (ev.key in moves) focusToken(h.strip, h.token + moves[ev.key]);
      else if (ev.key === 'Home') focusToken(h.strip, 0);
      else if (ev.key === 'End') focusToken(h.strip, h.strip.children.length - 1);
      else return;
      ev.preventDefault();
    });
  }

  return { newChat, lastPrompted, wire };
}
