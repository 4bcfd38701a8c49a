// The pipeline view's model drift card (GET /v1/drift): each model version at each
// station against the baseline it set there, the drifting ones first.

import { $, el } from './dom.js';
import { api } from './access.js';

const ORDER = { drifting: 0, steady: 1, filling: 2, learning: 3 };
const num = (v, digits) => (v === null || v === undefined ? '–' : Number(v).toFixed(digits));

export async function loadDrift() {
  if (document.hidden || $('view-pipeline').hidden) return;
  let r;
  try { r = await api('/v1/drift'); } catch (_) { return; }
  if (!r.ok) return;
  const list = await r.json();
  const rows = list.drift.slice().sort((a, b) => (ORDER[a.state] - ORDER[b.state])
    || a.station.localeCompare(b.station) || a.model.localeCompare(b.model));
  const table = $('drift');
  const head = el('tr');
  for (const [t, c] of [['station', ''], ['model', ''], ['state', ''], ['PSI', 'num'], ['detections/frame', 'num'], ['why', '']]) {
    head.append(el('th', c, t));
  }
  const body = rows.map((d) => {
    const tr = el('tr', `drift-${d.state}`);
    tr.dataset.station = d.station;
    tr.dataset.state = d.state;
    const state = d.state === 'learning' ? `learning (${d.baseline_frames}/${list.baseline_frames})`
      : d.state === 'filling' ? `filling (${d.window_frames}/${list.window_frames})` : d.state;
    const perFrame = d.state === 'learning' ? num(d.baseline_detections_per_frame, 2)
      : `${num(d.window_detections_per_frame, 2)} vs ${num(d.baseline_detections_per_frame, 2)}`;
    tr.append(el('td', '', d.station), el('td', '', `${d.model} ${d.version}`), el('td', 'state', state),
      el('td', 'num', num(d.psi, 3)), el('td', 'num', perFrame), el('td', 'why', d.reasons.join('; ')));
    return tr;
  });
  table.replaceChildren(head, ...body);
  $('drift-note').textContent = rows.length ? `Lines: PSI ≥ ${list.max_psi}, detections per frame ×${list.max_detections_ratio} either way; baseline ${list.baseline_frames} frames, window ${list.window_frames}.`
    : 'No model has answered a frame yet.';
}
