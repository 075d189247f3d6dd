// The demo page: a chat with the model running in the blockffn worker engine, and a live view of
// which experts each token and each chunk of tokens used. Plain ES module, no dependencies beyond
// the package served next to it (../js/index.js); no request leaves the page's origin.
//
// Test hook (read-only snapshots): window.blockffnDemo — see the end of this file.

import { BlockffnError, CACHE_NAME, chatStops, createEngine, deleteModelFromCache, renderChat } from '../js/index.js';
import {
  CHUNK_SIZES,
  CLS_WINDOWS,
  activeInLayer,
  chunkCounts,
  chunkOf,
  costModel,
  expertLists,
  fmtBytes,
  fmtFlops,
  fmtPct,
  independentCls,
  rampColor,
  savings,
} from './sparsity.js';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const DEFAULT_MODEL = new URL('../models/demo/', import.meta.url).href;

const state = {
  engine: null,
  info: null,
  runtime: null,
  source: null, // what the loaded model came from (URL string or File[])
  sourceLabel: '',
  busy: null, // null | 'load' | 'generate' | 'compare'
  abort: null,
  messages: [], // chat history (ChatML messages)
  gens: [], // every reply, in order
  hover: null, // { gen, token } under the pointer
  pin: null, // { gen, token } focused or clicked
  L: 8,
  layer: 0,
  heat: null, // what the heatmap shows now (for the test hook)
  loadEvents: [], // progress events of the latest load
  compare: null,
};

// ---------------------------------------------------------------------------------------------
// Status, errors

function setState(s, text) {
  document.body.dataset.state = s;
  $('state').textContent = text;
}

const HEADLINES = {
  ModelNotFound: 'No model found there.',
  Network: 'The model could not be downloaded.',
  IntegrityMismatch: 'The model files are damaged or incomplete.',
  OutOfMemory: 'This model is too large to run in the browser here.',
  InvalidConfig: 'That model is not one this engine can run.',
  InvalidCheckpoint: 'That model package is malformed.',
  Tokenizer: 'The model’s tokenizer could not be read.',
  InvalidInput: 'That request was not valid.',
  Aborted: 'Cancelled.',
  Unsupported: 'This browser cannot run the engine.',
  Internal: 'The engine hit an internal error.',
};

function showError(e, context = '') {
  const code = e instanceof BlockffnError || (e && e.code) ? e.code : 'Internal';
  const box = $('alert');
  box.dataset.code = code;
  $('alert-title').textContent = `${context}${HEADLINES[code] ?? 'Something went wrong.'}`;
  $('alert-detail').textContent = `${e && e.message ? e.message : String(e)} (${code})`;
  box.hidden = false;
}

function clearError() {
  $('alert').hidden = true;
  delete $('alert').dataset.code;
}

function setBusy(b) {
  state.busy = b;
  const ready = !!state.info && !b;
  $('send').disabled = !ready;
  $('compare').disabled = !ready || !lastPrompted();
  $('stop').disabled = !(b === 'generate' || b === 'compare');
  $('load-url').disabled = b !== null;
  $('load-default').disabled = b !== null;
  for (const id of ['pick-dir', 'pick-files']) $(id).disabled = b !== null;
  $('progress-box').hidden = b !== 'load';
  if (b === 'load') setState('loading', 'loading model…');
  else if (b === 'generate') setState('generating', 'generating…');
  else if (b === 'compare') setState('generating', 'comparing sparse and dense…');
  else if (state.info) setState('ready', 'ready');
  else setState('error', 'no model loaded');
}

function stopCurrent() {
  if (state.abort) state.abort.abort();
}

// ---------------------------------------------------------------------------------------------
// Model loading

/** A cached model is used as is; when the server's manifest differs, drop the stale copy first. */
async function refreshStaleCache(url) {
  if (typeof caches === 'undefined') return;
  try {
    const base = new URL(url, location.href);
    if (base.pathname.endsWith('/manifest.json')) base.pathname = base.pathname.slice(0, -'manifest.json'.length);
    if (!base.pathname.endsWith('/')) base.pathname += '/';
    const m = new URL('manifest.json', base);
    m.search = base.search;
    const cache = await caches.open(CACHE_NAME);
    const hit = await cache.match(m.href);
    if (!hit) return;
    const fresh = await fetch(m.href, { cache: 'no-store' });
    if (!fresh.ok) return;
    if ((await fresh.text()) !== (await hit.text())) await deleteModelFromCache(base.href);
  } catch {
    /* offline or no cache: the loader decides */
  }
}

function describeProgress(e) {
  const mb = (n) => (n / 1e6).toFixed(1);
  if (e.phase === 'download') {
    return `Downloading ${e.file ?? ''}: ${mb(e.loaded)} of ${mb(e.total)} MB${e.fromCache ? ' (from the browser cache)' : ''}`;
  }
  if (e.phase === 'verify') return e.text ? `Verifying: ${e.text}` : `Verifying ${e.file ?? ''} (sha256)`;
  if (e.phase === 'parse') return 'Reading the config and tokenizer';
  return 'Ready';
}

/** Loads `source`; on failure shows a readable error and, when a model was loaded, loads it again. */
async function loadModel(source, label) {
  if (state.busy) return false;
  clearError();
  const previous = state.source ? { source: state.source, label: state.sourceLabel } : null;
  const ctrl = new AbortController();
  state.abort = ctrl;
  setBusy('load');
  const bar = $('load-progress');
  const text = $('load-progress-text');
  bar.value = 0;
  text.textContent = `Loading ${label}…`;
  state.loadEvents = [];
  const onProgress = (e) => {
    state.loadEvents.push({ phase: e.phase, loaded: e.loaded, total: e.total, fromCache: e.fromCache });
    // Download is most of the time; verify and parse the rest.
    const p = e.phase === 'download' ? 0.85 * (e.progress ?? 0) : e.phase === 'verify' ? 0.85 + 0.1 * (e.progress ?? 0) : e.phase === 'parse' ? 0.97 : 1;
    bar.value = p;
    text.textContent = describeProgress(e);
  };
  try {
    if (typeof source === 'string') await refreshStaleCache(source);
    const info = await state.engine.load(source, { onProgress, signal: ctrl.signal });
    modelReady(info, source, label);
    return true;
  } catch (e) {
    state.info = null;
    showError(e, e && e.code === 'Aborted' ? 'Loading: ' : `Loading ${label}: `);
    if (previous) {
      text.textContent = `Loading ${previous.label} again…`;
      try {
        const info = await state.engine.load(previous.source, { onProgress });
        modelReady(info, previous.source, previous.label, { keepChat: true });
        $('alert-detail').textContent += ` ${previous.label} is loaded again.`;
      } catch (e2) {
        showError(e2, `Loading ${previous.label} again: `);
      }
    } else {
      $('model-name').textContent = 'none';
    }
    return false;
  } finally {
    state.abort = null;
    setBusy(null);
    refreshRuntime();
  }
}

function modelReady(info, source, label, { keepChat = false } = {}) {
  const changed = !state.info || state.info.id !== info.id;
  state.info = info;
  state.source = source;
  state.sourceLabel = label;
  $('model-name').textContent = `${label} · ${(info.params / 1e6).toFixed(2)} M params${info.fromCache ? ' · from cache' : ''}`;
  renderModelInfo(info);
  buildHeatmap(info);
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
  if (changed && !keepChat) newChat();
  renderPanel();
}

function renderModelInfo(info) {
  const rows = [
    ['Model', state.sourceLabel],
    ['Parameters', `${(info.params / 1e6).toFixed(2)} M (${info.dtype}, ${fmtBytes(info.weightBytes)})`],
    ['Layers', String(info.numLayers)],
    ['Experts per layer', info.experts.count ? `${info.experts.count} of width ${info.experts.size}` : 'none (dense FFN)'],
    ['Attention / FFN', `${info.attention} / ${info.ffn}`],
    ['Context', `${info.contextLength} tokens`],
    ['Chat template', `${info.chatTemplate}${info.chatTemplateFallback ? ' (fallback)' : ''}`],
    ['Source', info.fromCache ? 'browser cache (sha256 checked)' : info.id.startsWith('files:') ? 'local files' : 'downloaded'],
  ];
  $('model-info').replaceChildren(
    ...rows.map(([k, v]) => {
      const d = document.createElement('div');
      const dt = document.createElement('dt');
      dt.textContent = k;
      const dd = document.createElement('dd');
      dd.textContent = v;
      d.append(dt, dd);
      return d;
    }),
  );
}

async function refreshRuntime() {
  if (!state.engine) return;
  try {
    state.runtime = await state.engine.runtimeInfo();
    const r = state.runtime;
    $('backend').textContent = `${r.backend} · Web Worker${r.crossOriginIsolated ? ' · cross-origin isolated' : ''}`;
  } catch {
    /* the worker died: the next call reports it */
  }
}

/** Files dropped on the page: folders are walked (names are what the loader matches). */
async function droppedFiles(dt) {
  const items = Array.from(dt.items || []).filter((i) => i.kind === 'file');
  const entries = items.map((i) => (i.webkitGetAsEntry ? i.webkitGetAsEntry() : null));
  if (entries.length && entries.every(Boolean)) {
    const files = [];
    const walk = async (entry) => {
      if (entry.isFile) {
        files.push(await new Promise((res, rej) => entry.file(res, rej)));
      } else if (entry.isDirectory) {
        const reader = entry.createReader();
        for (;;) {
          const batch = await new Promise((res, rej) => reader.readEntries(res, rej));
          if (batch.length === 0) break;
          for (const e of batch) await walk(e);
        }
      }
    };
    for (const e of entries) await walk(e);
    const dir = entries.length === 1 && entries[0].isDirectory ? entries[0].name : null;
    return { files, label: dir ? `${dir}/ (local)` : `${files.length} local files` };
  }
  const files = Array.from(dt.files || []);
  return { files, label: `${files.length} local files` };
}

function pickedLabel(files) {
  const rel = files[0] && files[0].webkitRelativePath;
  return rel && rel.includes('/') ? `${rel.split('/')[0]}/ (local)` : `${files.length} local files`;
}

// ---------------------------------------------------------------------------------------------
// Chat and generation

function numberInput(id, { min = -Infinity, max = Infinity, integer = false, fallback }) {
  const el = $(id);
  let v = Number(el.value);
  if (el.value.trim() === '' || !Number.isFinite(v)) v = fallback;
  v = Math.min(max, Math.max(min, integer ? Math.round(v) : v));
  el.value = String(v);
  return v;
}

function radio(name) {
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
  return o;
}

function lastPrompted() {
  for (let i = state.gens.length - 1; i >= 0; i--) if (state.gens[i].promptIds) return state.gens[i];
  return null;
}

function newChat() {
  if (state.busy === 'generate' || state.busy === 'compare') stopCurrent();
  state.messages = [];
  state.gens = [];
  state.hover = state.pin = null;
  state.compare = null;
  $('compare-out').textContent = '';
  $('log').replaceChildren($('empty-log') || emptyLogNote());
  $('empty-log').hidden = false;
  $('speed').textContent = '–';
  setBusy(state.busy);
  renderPanel();
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
  setBusy('generate');
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
    state.abort = null;
    g.el.classList.remove('streaming');
    g.el.removeAttribute('aria-busy');
    setBusy(null);
    scheduleRender(g, true);
  }
  return g;
}

/** Records one engine chunk into a generation (token, its mask, its text piece, stats). */
function absorb(g, c) {
  if (c.tokenIds.length) {
    g.ids.push(...c.tokenIds);
    g.masks.push(c.experts[0] ?? new Uint32Array());
    g.pieces.push(c.text);
  } else if (c.text && g.pieces.length) {
    g.pieces[g.pieces.length - 1] += c.text;
  }
  g.text += c.text;
  g.stats = c.stats;
  if (c.finishReason) g.finishReason = c.finishReason;
  scheduleRender(g);
}

// ---------------------------------------------------------------------------------------------
// Rendering: one pass per animation frame at most

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

const SHOW_WS = { ' ': '␣', '\n': '⏎', '\t': '⇥' };
function tokenLabel(piece) {
  if (piece === '') return '·';
  return piece.replace(/[ \n\t]/g, (c) => SHOW_WS[c]);
}

function renderGen(g) {
  if (g.text.length > g.shownText) {
    g.body.append(document.createTextNode(g.text.slice(g.shownText)));
    g.shownText = g.text.length;
  }
  const info = state.info;
  const words = info ? info.experts.wordsPerLayer : 0;
  const layers = info ? info.numLayers : 0;
  const maxActive = info ? info.numLayers * info.experts.count : 0;
  for (let t = g.shownTokens; t < g.ids.length; t++) {
    const s = document.createElement('span');
    s.className = 'tok';
    s.setAttribute('role', 'option');
    s.dataset.t = String(t);
    s.tabIndex = t === 0 ? 0 : -1;
    let active = 0;
    for (let l = 0; l < layers; l++) active += activeInLayer(g.masks[t], words, l);
    s.style.setProperty('--a', maxActive ? String(active / maxActive) : '0');
    s.setAttribute('aria-label', `token ${t + 1}: ${JSON.stringify(g.pieces[t])}, ${active} active experts`);
    s.textContent = tokenLabel(g.pieces[t]);
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
    g.meta.textContent =
      `${g.ids.length} tokens · ${tps ? tps.toFixed(1) : '–'} tok/s · ${g.mode} · ${why}` +
      (s && s.tls !== null && s.tls !== undefined ? ` · TLS ${fmtPct(s.tls)}` : '');
    g.el.dataset.finish = g.finishReason;
    if (tps) $('speed').textContent = tps.toFixed(1);
  }
  if (!state.pin && !state.hover) g.el.scrollIntoView({ block: 'end' });
}

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

// Heatmap: layers × experts cells, built once per model, updated in place.
let cells = [];
let rowTotals = [];
let prevCounts = null;
let prevMark = null;

function buildHeatmap(info) {
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

function labelCell(text, cls, title) {
  const d = document.createElement('div');
  d.className = `lab ${cls}`;
  d.textContent = text;
  if (title) d.title = title;
  return d;
}

let legendFor = 0;
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
  $('s-chunk-label').textContent = `Weights read in chunks of ${L} (each expert of a chunk once)`;
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
    for (const id of ['m-tls', 'm-cls', 'm-reuse', 'm-tokens', 'm-speed', 'm-mode', 's-blocks', 's-flops', 's-bytes', 's-chunk']) {
      $(id).textContent = '–';
    }
    renderClsPlot(null, null);
    renderUsage(null, -1, null);
    return;
  }
  const E = info.experts.count;
  const Lyr = info.numLayers;
  const words = info.experts.wordsPerLayer;
  const n = g.ids.length;
  const ch = chunkOf(t, L, n);
  const counts = chunkCounts(g.masks, ch.start, ch.end, Lyr, E, words);
  const mark = g.masks[t];
  const size = ch.end - ch.start;
  // cells
  let union = 0;
  for (let l = 0; l < Lyr; l++) {
    let rowUnion = 0;
    for (let e = 0; e < E; e++) {
      const i = l * E + e;
      const v = counts[i];
      if (v > 0) rowUnion++;
      const on = mark && mark.length ? (mark[l * words + (e >>> 5)] >>> (e & 31)) & 1 : 0;
      if (prevCounts && prevCounts[i] === v && prevMark[i] === on && prevCounts.L === L) continue;
      const c = cells[i];
      c.dataset.count = String(v);
      c.className = `cell${v > 0 ? ' u' : ''}${on ? ' t' : ''}`;
      c.style.background = v > 0 ? rampColor(v / L) : '';
    }
    union += rowUnion;
    rowTotals[l].textContent = String(rowUnion);
  }
  prevCounts = counts;
  prevCounts.L = L;
  prevMark = new Uint8Array(Lyr * E);
  for (let l = 0; l < Lyr; l++) {
    for (let e = 0; e < E; e++) prevMark[l * E + e] = mark && mark.length ? (mark[l * words + (e >>> 5)] >>> (e & 31)) & 1 : 0;
  }
  const total = Lyr * E;
  const where =
    ch.index < 0
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
  state.heat = { gen: g.n, token: t, L, start: ch.start, end: ch.end, union, counts: Array.from(counts) };

  renderTokenDetail(g, t);
  // metrics
  const s = g.stats || {};
  $('m-tls').textContent = fmtPct(s.tls);
  $('m-cls').textContent = fmtPct(s.cls ? s.cls[L] : null);
  $('m-reuse').textContent = fmtPct(s.reuse);
  $('m-tokens').textContent = String(n);
  $('m-speed').textContent = s.tokensPerSecond ? `${s.tokensPerSecond.toFixed(1)} tok/s` : '–';
  $('m-mode').textContent = g.mode;
  const sv = savings(g.masks, info, L);
  const dense = g.mode === 'dense';
  $('s-blocks').textContent = `${sv.skipped.toLocaleString()} of ${sv.blocks.toLocaleString()} (${fmtPct(sv.skippedShare)})${dense ? ' could be' : ''}`;
  $('s-flops').textContent = `${fmtFlops(sv.flopsSaved)} of ${fmtFlops(sv.flopsDense)} in experts; ≈${fmtPct(sv.flopsShareOfModel)} of the whole model's`;
  $('s-bytes').textContent = `${fmtBytes(sv.bytesSkipped)} of ${fmtBytes(sv.bytesDense)} (${fmtPct(sv.bytesDense ? sv.bytesSkipped / sv.bytesDense : 0)})`;
  $('s-chunk').textContent =
    `${fmtBytes(sv.chunkBytesRead)} instead of ${fmtBytes(sv.chunkBytesDense)} over ${sv.chunks} chunk${sv.chunks === 1 ? '' : 's'} ` +
    `(${fmtPct(sv.chunkBytesDense ? 1 - sv.chunkBytesRead / sv.chunkBytesDense : 0)} saved)`;
  $('savings').dataset.mode = g.mode;
  renderClsPlot(g, s);
  renderUsage(g, t, ch);
}

function renderTokenDetail(g, t) {
  const info = state.info;
  const lists = expertLists(g.masks[t] ?? [], info.experts.wordsPerLayer, info.numLayers);
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

function announceToken(g, t) {
  const info = state.info;
  const lists = expertLists(g.masks[t] ?? [], info.experts.wordsPerLayer, info.numLayers);
  $('token-live').textContent =
    `Token ${t + 1}, ${JSON.stringify(g.pieces[t])}: ` + lists.map((ids, l) => `layer ${l}: ${ids.length ? ids.join(', ') : 'none'}`).join('; ');
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
    const ind = independentCls(g.masks, info.numLayers, info.experts.count, info.experts.wordsPerLayer);
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
let usageCellWidth = 4;
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
  const ctx = canvas.getContext('2d');
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  const css = getComputedStyle(document.documentElement);
  ctx.fillStyle = css.getPropertyValue('--usage-bg') || '#f4f4f6';
  ctx.fillRect(0, 0, cssW, cssH);
  if (!g || !E || n === 0) {
    canvas.setAttribute('aria-label', 'No tokens yet');
    return;
  }
  const layer = Math.min(state.layer, info.numLayers - 1);
  const words = info.experts.wordsPerLayer;
  if (ch) {
    ctx.fillStyle = css.getPropertyValue('--band') || 'rgba(255,200,0,.25)';
    ctx.fillRect(ch.start * cw, 0, (ch.end - ch.start) * cw, cssH);
  }
  ctx.fillStyle = css.getPropertyValue('--mark') || '#333';
  let active = 0;
  for (let k = 0; k < n; k++) {
    const mk = g.masks[k];
    if (!mk || !mk.length) continue;
    for (let w = 0; w < words; w++) {
      let bits = (mk[layer * words + w] ?? 0) >>> 0;
      while (bits) {
        const b = 31 - Math.clz32(bits & -bits);
        const e = w * 32 + b;
        ctx.fillRect(k * cw, e * chh, Math.max(1, cw - (cw > 3 ? 1 : 0)), Math.max(1, chh - (chh > 2 ? 1 : 0)));
        active++;
        bits = (bits & (bits - 1)) >>> 0;
      }
    }
  }
  ctx.strokeStyle = css.getPropertyValue('--chunk-line') || '#888';
  ctx.lineWidth = 1;
  ctx.beginPath();
  for (let s = 1; s < n; s += state.L) {
    ctx.moveTo(s * cw + 0.5, 0);
    ctx.lineTo(s * cw + 0.5, cssH);
  }
  ctx.stroke();
  if (t >= 0) {
    ctx.strokeStyle = css.getPropertyValue('--accent') || '#06c';
    ctx.lineWidth = 1.5;
    ctx.strokeRect(t * cw + 0.75, 0.75, cw - 1.5, cssH - 1.5);
  }
  canvas.setAttribute(
    'aria-label',
    `Layer ${layer}: ${n} tokens, on average ${(active / n).toFixed(1)} of ${E} experts active per token`,
  );
  if (!state.pin && !state.hover) scroll.scrollLeft = scroll.scrollWidth;
}

// ---------------------------------------------------------------------------------------------
// Sparse / dense comparison (greedy, same prompt)

async function compare() {
  const base = lastPrompted();
  if (!base || state.busy) return;
  clearError();
  const out = $('compare-out');
  const maxTokens = numberInput('max-tokens', { min: 1, max: 4096, integer: true, fallback: 96 });
  const ctrl = new AbortController();
  state.abort = ctrl;
  setBusy('compare');
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
    setBusy(null);
  }
}

// ---------------------------------------------------------------------------------------------
// Wiring

function tokenEventTarget(ev) {
  const tok = ev.target.closest && ev.target.closest('.tok');
  if (!tok) return null;
  const strip = tok.parentElement;
  return { tok, strip, gen: Number(strip.dataset.gen), token: Number(tok.dataset.t) };
}

function focusToken(strip, t) {
  const toks = strip.children;
  if (toks.length === 0) return;
  const i = Math.max(0, Math.min(toks.length - 1, t));
  for (const el of strip.querySelectorAll('.tok[tabindex="0"]')) el.tabIndex = -1;
  toks[i].tabIndex = 0;
  toks[i].focus();
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
  document.addEventListener('keydown', (e) => {
    if (e.key === 'Escape' && state.abort) {
      e.preventDefault();
      stopCurrent();
    }
  });
  $('stop').addEventListener('click', stopCurrent);
  $('cancel-load').addEventListener('click', stopCurrent);
  $('new-chat').addEventListener('click', () => {
    newChat();
    $('prompt').focus();
  });
  $('compare').addEventListener('click', compare);
  $('alert-close').addEventListener('click', clearError);
  $('chunk-size').addEventListener('change', (e) => {
    state.L = Number(e.target.value);
    renderPanel();
  });
  $('usage-layer').addEventListener('change', (e) => {
    state.layer = Number(e.target.value);
    renderPanel();
  });
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
    announceToken(state.gens[h.gen], h.token);
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
  $('usage').addEventListener('click', (ev) => {
    const { g } = viewed();
    if (!g || !g.ids.length) return;
    const rect = ev.currentTarget.getBoundingClientRect();
    const t = Math.floor((ev.clientX - rect.left) / usageCellWidth);
    if (t >= 0 && t < g.ids.length) focusToken(g.strip, t);
  });

  // Loading
  $('url-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const url = $('model-url').value.trim();
    if (!url) {
      $('model-url').focus();
      return;
    }
    loadModel(url, url);
  });
  $('load-default').addEventListener('click', () => loadModel(DEFAULT_MODEL, 'demo model'));
  for (const id of ['pick-dir', 'pick-files']) {
    $(id).addEventListener('change', (e) => {
      const files = Array.from(e.target.files || []);
      e.target.value = '';
      if (files.length) loadModel(files, pickedLabel(files));
    });
  }
  const drop = $('drop');
  const over = (e) => {
    if (!e.dataTransfer || !Array.from(e.dataTransfer.types || []).includes('Files')) return;
    e.preventDefault();
    e.dataTransfer.dropEffect = 'copy';
    drop.classList.add('over');
  };
  document.addEventListener('dragover', over);
  document.addEventListener('dragenter', over);
  document.addEventListener('dragleave', (e) => {
    if (!e.relatedTarget) drop.classList.remove('over');
  });
  document.addEventListener('drop', async (e) => {
    if (!e.dataTransfer || !Array.from(e.dataTransfer.types || []).includes('Files')) return;
    e.preventDefault();
    drop.classList.remove('over');
    try {
      const { files, label } = await droppedFiles(e.dataTransfer);
      if (files.length) loadModel(files, label);
    } catch (err) {
      showError(err, 'Reading the dropped files: ');
    }
  });
  window.addEventListener('resize', () => renderPanel());
}

async function main() {
  wire();
  // The browser may restore form values on reload: start from what the controls show.
  state.L = Number($('chunk-size').value) || 8;
  buildHeatmap({ experts: { count: 0 }, numLayers: 0 });
  renderPanel();
  setState('starting', 'starting the engine…');
  try {
    state.engine = await createEngine({ worker: true });
  } catch (e) {
    showError(e, 'Starting the engine: ');
    setState('error', 'the engine could not start');
    return;
  }
  await refreshRuntime();
  const url = params.get('model');
  await loadModel(url ? new URL(url, location.href).href : DEFAULT_MODEL, url || 'demo model');
  if (state.info) $('prompt').focus();
}

// Read-only snapshots for tests and the curious (copies; changing them changes nothing).
const snapshotGen = (g) => ({
  n: g.n,
  kind: g.kind,
  mode: g.mode,
  promptIds: g.promptIds ? Array.from(g.promptIds) : null,
  ids: g.ids.slice(),
  masks: g.masks.map((m) => Array.from(m)),
  pieces: g.pieces.slice(),
  text: g.text,
  stats: g.stats ? structuredClone(g.stats) : null,
  finishReason: g.finishReason,
});
const ready = main();
Object.defineProperty(window, 'blockffnDemo', {
  value: Object.freeze({
    ready,
    get state() {
      return document.body.dataset.state;
    },
    info: () => (state.info ? structuredClone(state.info) : null),
    runtime: () => (state.runtime ? { ...state.runtime } : null),
    gens: () => state.gens.map(snapshotGen),
    heatmap: () => (state.heat ? structuredClone(state.heat) : null),
    compare: () => (state.compare ? structuredClone(state.compare) : null),
    loadEvents: () => structuredClone(state.loadEvents),
    chunkSizes: CHUNK_SIZES.slice(),
  }),
});
