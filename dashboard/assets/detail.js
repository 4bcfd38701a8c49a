// The station detail panel: the station's frame, its counters and its recent
// results (GET /v1/stations/{s}/results, filtered by class and score).

import { $, el } from './dom.js';
import { state } from './state.js';
import { api } from './access.js';
import { serverNow, ageText, clock } from './time.js';
import { confClass, scoreText, paintFrame } from './frame.js';

// ---- station detail -----------------------------------------------------------------
export function openDetail(name) {
  state.detail = name;
  $('detail').hidden = false;
  $('detail-title').textContent = name;
  $('history-form').reset();
  paintDetailFrame();
  renderDetailStats();
  loadHistory();
  $('detail-close').focus();
}

export function closeDetail() {
  const name = state.detail;
  state.detail = null;
  $('detail').hidden = true;
  const s = name && state.stations.get(name);
  if (s) s.tile.focus();
}

export function paintDetailFrame() {
  const s = state.stations.get(state.detail);
  const frame = $('detail-frame');
  if (s && s.result) {
    paintFrame(frame, s.result, s.tile.querySelector('.stage img').getAttribute('src') || '');
  } else {
    frame.textContent = '';
    frame.append(el('div', 'placeholder', 'no frame to show yet'));
  }
}

export function renderDetailStats() {
  const s = state.stations.get(state.detail);
  const sum = s && s.summary;
  $('detail-stats').textContent = sum
    ? `${sum.frames} frames · ${sum.errors} errors · ${sum.detections} objects · last frame ${ageText(serverNow() - Date.parse(sum.last_seen))}`
    : '';
}

export async function loadHistory() {
  const name = state.detail;
  if (!name) return;
  const form = new FormData($('history-form'));
  const q = new URLSearchParams({ limit: '50' });
  const cls = (form.get('class') || '').trim();
  const min = (form.get('min_score') || '').trim();
  if (cls) q.set('class', cls);
  if (min && !Number.isNaN(Number(min))) q.set('min_score', min);
  const note = $('history-note');
  note.textContent = 'loading…';
  try {
    const r = await api(`/v1/stations/${encodeURIComponent(name)}/results?${q}`);
    if (!r.ok) throw new Error(`HTTP ${r.status}`);
    const body = await r.json();
    if (state.detail !== name) return;
    renderHistory(body.results || []);
    note.textContent = `${(body.results || []).length} most recent, updated ${clock(new Date().toISOString())}`;
  } catch (e) {
    note.textContent = `history unavailable: ${e.message}`;
  }
}

function renderHistory(results) {
  const table = $('history');
  table.textContent = '';
  const head = el('tr');
  for (const [h, cls] of [['received', ''], ['status', ''], ['objects', ''], ['latency', 'num']]) head.append(el('th', cls, h));
  table.append(head);
  for (const r of results) {
    const tr = el('tr');
    tr.append(el('td', '', clock(r.received_at)));
    tr.append(el('td', `status-${r.status}`, r.status === 'ok' ? 'ok' : `${r.status}${r.error ? `: ${r.error}` : ''}`));
    const objects = el('td');
    if (!r.detections.length) objects.append(el('span', 'muted', 'none'));
    for (const d of r.detections) objects.append(el('span', `chip ${confClass(d.score)}`, `${d.class_name} ${scoreText(d.score)}`));
    tr.append(objects);
    const latency = Date.parse(r.completed_at) - Date.parse(r.received_at);
    tr.append(el('td', 'num', `${latency} ms`));
    table.append(tr);
  }
}
