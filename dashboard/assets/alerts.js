// The alerts strip under the header (GET /v1/alerts).

import { $ } from './dom.js';
import { api } from './access.js';

// ---- alerts --------------------------------------------------------------------
// GET /v1/alerts: the alert rules' ([[rule]]) alerts firing now, the most severe
// first, shown under the header while any fires (of the stations the token reads).
export async function loadAlerts() {
  let r;
  try { r = await api('/v1/alerts?limit=1'); } catch (_) { return; }
  if (!r.ok) return;
  const { firing } = await r.json();
  $('alerts-list').replaceChildren(...firing.map((a) => {
    const li = document.createElement('li');
    li.className = `alert sev-${a.severity}`;
    li.dataset.rule = a.rule;
    li.dataset.station = a.station;
    const sev = document.createElement('span');
    sev.className = 'sev';
    sev.textContent = a.severity;
    const what = document.createElement('b');
    what.textContent = `${a.rule} · ${a.station}`;
    const since = document.createElement('time');
    since.dateTime = a.since;
    since.textContent = `since ${new Date(a.since).toLocaleTimeString()}`;
    const why = document.createElement('span');
    why.className = 'why';
    why.textContent = a.reason;
    li.append(sev, what, since, why);
    return li;
  }));
  $('alerts').hidden = firing.length === 0;
}
