// Page helpers shared by the views: element lookup, the status line and the error box.

import { BlockffnError } from '../js/index.js';

export const $ = (id) => document.getElementById(id);

export function setState(s, text) {
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

/** Shows an error in the alert box: a headline by error code, then the message. */
export function showError(e, context = '') {
  const code = e instanceof BlockffnError || (e && e.code) ? e.code : 'Internal';
  const box = $('alert');
  box.dataset.code = code;
  $('alert-title').textContent = `${context}${HEADLINES[code] ?? 'Something went wrong.'}`;
  $('alert-detail').textContent = `${e && e.message ? e.message : String(e)} (${code})`;
  box.hidden = false;
}

export function clearError() {
  $('alert').hidden = true;
  delete $('alert').dataset.code;
}
