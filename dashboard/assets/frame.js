// A frame with its boxes (tiles, the detail panel, the review queue) and the
// confidence colours with the page's thresholds: boxes.js, given state.config.

import { confClass as conf, scoreText as scoreLabel, drawBoxes } from './boxes.js';
import { $, el } from './dom.js';
import { state } from './state.js';

// ---- confidence colours (boxes.js, shared with the station page) ---------------
export function confClass(score) { return conf(score, state.config); }
export function scoreText(score) { return scoreLabel(score, state.config); }

export function renderLegend() {
  const c = state.config;
  const legend = $('legend');
  legend.textContent = '';
  const item = (cls, text) => {
    const s = el('span');
    s.append(el('i', cls), text);
    legend.append(s);
  };
  item('conf-low', `below ${c.low_threshold.toFixed(2)}`);
  item('conf-mid', `${c.low_threshold.toFixed(2)} – ${c.accept_threshold.toFixed(2)}`);
  item('conf-ok', `accepted ≥ ${c.accept_threshold.toFixed(2)}`);
}

// ---- a frame with its boxes -----------------------------------------------------
// `frame` is a .frame element; `result` the result whose boxes are drawn; `src` the
// image (already loaded, so picture and boxes change together).
export function paintFrame(frame, result, picture) {
  let stage = frame.querySelector('.stage');
  if (!stage) {
    frame.textContent = '';
    stage = el('div', 'stage');
    const img = el('img');
    img.alt = '';
    stage.append(img, el('div', 'boxes'));
    frame.append(stage);
  }
  const w = (result && result.image && result.image.width) || 4;
  const h = (result && result.image && result.image.height) || 3;
  stage.style.setProperty('--ar', String(w / h));
  // `picture`: an image already decoded off-screen (put in place as it is, so the
  // picture and its boxes appear together), a URL, or '' for none.
  const current = stage.querySelector('img');
  if (picture instanceof HTMLImageElement) {
    if (picture !== current) {
      picture.alt = '';
      current.replaceWith(picture);
    }
  } else if (current.getAttribute('src') !== picture) {
    if (picture) current.src = picture; else current.removeAttribute('src');
  }
  drawBoxes(stage.querySelector('.boxes'), result && result.detections, state.config);
  let note = frame.querySelector('.error-note');
  if (result && result.status !== 'ok') {
    if (!note) { note = el('div', 'error-note'); frame.append(note); }
    note.textContent = `${result.status}: ${result.error || 'no detections'}`;
  } else if (note) {
    note.remove();
  }
}

export function placeholder(frame, text) {
  if (frame.querySelector('.stage')) return;
  frame.textContent = '';
  frame.append(el('div', 'placeholder', text));
}
