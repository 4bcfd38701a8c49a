// The counts strip under the header: line crossings and zone entries of the last
// hour (GET /v1/counts).

import { $ } from './dom.js';
import { api } from './access.js';

// ---- line and zone counts -------------------------------------------------------
// GET /v1/counts: per station and line, the crossings in and out over the last hour;
// per zone, the entries and exits ([[line]], [[zone]]); shown while there are any.
export async function loadCounts() {
  let r;
  try { r = await api('/v1/counts?minutes=60&interval_s=3600'); } catch (_) { return; }
  if (!r.ok) return;
  const { counts } = await r.json();
  const totals = new Map();
  for (const c of counts) {
    const key = `${c.station}\u0000${c.name}`;
    const t = totals.get(key) || { station: c.station, name: c.name, in: 0, out: 0, entered: 0, left: 0, line: false };
    if (c.kind === 'crossed') { t.line = true; t[c.direction] += c.count; } else { t[c.kind] += c.count; }
    totals.set(key, t);
  }
  $('counts-list').replaceChildren(...[...totals.values()].map((t) => {
    const li = document.createElement('li');
    li.className = 'count';
    li.dataset.station = t.station;
    li.dataset.name = t.name;
    const what = document.createElement('b');
    what.textContent = `${t.name} · ${t.station}`;
    const n = document.createElement('span');
    n.textContent = t.line ? `in ${t.in} · out ${t.out}` : `entered ${t.entered} · left ${t.left}`;
    li.append(what, n);
    return li;
  }));
  $('counts').hidden = totals.size === 0;
}
