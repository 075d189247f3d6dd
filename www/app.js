// The demo page: a chat with the model running in the blockffn worker engine, and a live view of
// which experts each token and each chunk of tokens used. Plain ES modules, no dependencies beyond
// the package served next to it (../js/index.js); no request leaves the page's origin.
//
// This file is the composition root: the page state, the busy/idle switch, the views (views/:
// chat, heatmap, plots, loader) wired to one another, start-up, and the test hook
// window.blockffnDemo (read-only snapshots) — see the end of this file.

import { createEngine } from '../js/index.js';
import { $, setState, showError, clearError } from './dom.js';
import { createChat, focusToken } from './views/chat.js';
import { createHeatmap } from './views/heatmap.js';
import { createLoader } from './views/loader.js';
import { createPlots } from './views/plots.js';

/** Chunk sizes the page offers (the engine reports CLS_L for these and 64). */
const CHUNK_SIZES = [1, 2, 4, 8, 16, 32];
const DEFAULT_MODEL = new URL('../models/demo/', import.meta.url).href;
const params = new URLSearchParams(location.search);

const state = {
  engine: null,
  info: null,
  runtime: null,
  source: null, // what the loaded model came from (URL string or File[])
  sourceLabel: '',
  // Where models run: ?backend=auto|webgpu|wasm, then the selector (loads the model again).
  backend: ['auto', 'webgpu', 'wasm'].includes(params.get('backend')) ? params.get('backend') : 'auto',
  loadedBackend: 'auto',
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

function setBusy(b) {
  state.busy = b;
  const ready = !!state.info && !b;
  $('send').disabled = !ready;
  $('compare').disabled = !ready || !view.chat.lastPrompted();
  $('stop').disabled = !(b === 'generate' || b === 'compare');
  $('load-url').disabled = b !== null;
  $('load-default').disabled = b !== null;
  for (const id of ['pick-dir', 'pick-files', 'backend-choice']) $(id).disabled = b !== null;
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

// The views see the page through `view` (each looks the others up when it needs them).
const view = { state, setBusy, stopCurrent, focusToken, defaultModel: DEFAULT_MODEL };
view.chat = createChat(view);
view.heatmap = createHeatmap(view);
view.plots = createPlots(view);
view.loader = createLoader(view);

function wire() {
  view.chat.wire();
  document.addEventListener('keydown', (e) => {
    if (e.key === 'Escape' && state.abort) {
      e.preventDefault();
      stopCurrent();
    }
  });
  $('stop').addEventListener('click', stopCurrent);
  $('cancel-load').addEventListener('click', stopCurrent);
  $('alert-close').addEventListener('click', clearError);
  $('span-view').addEventListener('change', () => view.heatmap.renderPanel());
  $('chunk-size').addEventListener('change', (e) => {
    state.L = Number(e.target.value);
    view.heatmap.renderPanel();
  });
  view.plots.wire();
  view.loader.wire();
  window.addEventListener('resize', () => view.heatmap.renderPanel());
}

async function main() {
  wire();
  // The browser may restore form values on reload: start from what the controls show.
  state.L = Number($('chunk-size').value) || 8;
  view.heatmap.build({ experts: { count: 0 }, numLayers: 0 });
  view.heatmap.renderPanel();
  setState('starting', 'starting the engine…');
  try {
    state.engine = await createEngine({ worker: true });
  } catch (e) {
    showError(e, 'Starting the engine: ');
    setState('error', 'the engine could not start');
    return;
  }
  await view.loader.refreshRuntime();
  // ?model=URL: resolved against the page by the package (as load() resolves every model URL).
  const url = params.get('model');
  await view.loader.load(url || DEFAULT_MODEL, url || 'demo model');
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
