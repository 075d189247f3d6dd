// Model loading: by URL, the default model, picked or dropped files; progress; the model card; a
// stale cached copy dropped when the server's manifest changed. If a load fails, the model that was
// loaded before is loaded again.

import { CACHE_NAME, deleteModelFromCache, modelFileUrl } from '../../js/index.js';
import { $, clearError, showError } from '../dom.js';
import { fmtBytes } from '../format.js';

/** A cached model is used as is; when the server's manifest differs, drop the stale copy first. */
async function refreshStaleCache(url) {
  if (typeof caches === 'undefined') return;
  try {
    const manifest = modelFileUrl(url);
    const cache = await caches.open(CACHE_NAME);
    const hit = await cache.match(manifest);
    if (!hit) return;
    const fresh = await fetch(manifest, { cache: 'no-store' });
    if (!fresh.ok) return;
    if ((await fresh.text()) !== (await hit.text())) await deleteModelFromCache(url);
  } catch {
    /* offline, no cache or not a URL: the loader decides */
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

/**
 * @param {{ state: any, setBusy: (b: string | null) => void, defaultModel: string,
 *   heatmap: any, plots: any, chat: any }} ctx the page (views are looked up when called)
 */
export function createLoader(ctx) {
  const { state } = ctx;

  /** Loads `source`; on failure shows a readable error and, when a model was loaded, loads it again. */
  async function load(source, label) {
    if (state.busy) return false;
    clearError();
    const previous = state.source ? { source: state.source, label: state.sourceLabel, backend: state.loadedBackend } : null;
    const backend = state.backend;
    const ctrl = new AbortController();
    state.abort = ctrl;
    ctx.setBusy('load');
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
      const info = await state.engine.load(source, { onProgress, signal: ctrl.signal, backend });
      state.loadedBackend = backend;
      modelReady(info, source, label);
      return true;
    } catch (e) {
      state.info = null;
      showError(e, e && e.code === 'Aborted' ? 'Loading: ' : `Loading ${label}: `);
      if (previous) {
        text.textContent = `Loading ${previous.label} again…`;
        try {
          const info = await state.engine.load(previous.source, { onProgress, backend: previous.backend });
          state.backend = previous.backend;
          $('backend-choice').value = previous.backend;
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
      ctx.setBusy(null);
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
    ctx.heatmap.build(info);
    ctx.plots.modelChanged(info);
    if (changed && !keepChat) ctx.chat.newChat();
    ctx.heatmap.renderPanel();
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
      ['Draft head', info.draftHead ? `EAGLE, ${(info.draftHead.params / 1e6).toFixed(2)} M parameters` : 'none'],
      ['Source', info.fromCache ? 'browser cache (sha256 checked)' : info.id.startsWith('files:') ? 'local files' : 'downloaded'],
    ];
    // The draft head runs on the wasm backend, when the package has one.
    const eagle = $('spec-eagle').querySelector('input');
    eagle.disabled = !info.draftHead || info.backend === 'webgpu';
    if (eagle.disabled && eagle.checked) document.querySelector('input[name="spec"][value="off"]').checked = true;
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
      const gpu = r.backend === 'webgpu' && r.gpu && r.gpu.name ? ` (${r.gpu.name})` : '';
      $('backend').textContent = `${r.backend}${gpu} · Web Worker${r.crossOriginIsolated ? ' · cross-origin isolated' : ''}`;
      // Why this backend (e.g. why auto did not take WebGPU): on hover, and for screen readers.
      $('backend').title = r.backendReason ?? '';
      $('backend').setAttribute('aria-description', r.backendReason ?? '');
    } catch {
      /* the worker died: the next call reports it */
    }
  }

  function wire() {
    const choice = $('backend-choice');
    choice.value = state.backend;
    choice.addEventListener('change', () => {
      if (state.busy) {
        choice.value = state.backend;
        return;
      }
      state.backend = choice.value;
      // The model runs where it was loaded: switching loads it again on the new backend.
      if (state.source) load(state.source, state.sourceLabel);
    });
    $('url-form').addEventListener('submit', (e) => {
      e.preventDefault();
      const url = $('model-url').value.trim();
      if (!url) {
        $('model-url').focus();
        return;
      }
      load(url, url);
    });
    $('load-default').addEventListener('click', () => load(ctx.defaultModel, 'demo model'));
    for (const id of ['pick-dir', 'pick-files']) {
      $(id).addEventListener('change', (e) => {
        const files = Array.from(e.target.files || []);
        e.target.value = '';
        if (files.length) load(files, pickedLabel(files));
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
        if (files.length) load(files, label);
      } catch (err) {
        showError(err, 'Reading the dropped files: ');
      }
    });
  }

  return { load, refreshRuntime, wire };
}
