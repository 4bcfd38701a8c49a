// visionq dashboard. Vanilla JavaScript, no dependencies, served by the results role.
// This entry wires the modules together: it reads the page's configuration, asks for
// a token when one is needed, routes between the views and starts their timers.
// Live view: live.js (the feed), tiles.js, detail.js. Pipeline view: pipeline.js over
// prom.js, drift.js. Review view: review.js. Strips under the header: alerts.js, counts.js.
'use strict';

import { $ } from './dom.js';
import { state, review } from './state.js';
import { token, api, showLogin, setupLogin } from './access.js';
import { loadAlerts } from './alerts.js';
import { loadCounts } from './counts.js';
import { renderLegend } from './frame.js';
import { applyFilter, layout } from './tiles.js';
import { connect, watchdog } from './live.js';
import { closeDetail, loadHistory } from './detail.js';
import { pollMetrics } from './pipeline.js';
import { loadDrift } from './drift.js';
import { loadReview } from './review.js';

// ---- views -------------------------------------------------------------------------
function route() {
  const view = ['#pipeline', '#review'].includes(location.hash) ? location.hash.slice(1) : 'live';
  for (const name of ['live', 'pipeline', 'review']) {
    $(`view-${name}`).hidden = name !== view;
    if (name === view) $(`tab-${name}`).setAttribute('aria-current', 'page'); else $(`tab-${name}`).removeAttribute('aria-current');
  }
  if (view === 'live') layout();
  else if (view === 'pipeline') { pollMetrics(); loadDrift(); }
  else loadReview();
}

async function start() {
  try {
    const r = await api('/v1/dashboard/config');
    if (r.ok) state.config = { ...state.config, ...(await r.json()) };
  } catch (_) { /* defaults until the service answers */ }
  setupLogin();
  if (state.config.auth && state.config.auth.required) {
    if (!token()) { showLogin(); return; }
    // A token that cannot read the feed asks again instead of reconnecting forever.
    const check = await api('/v1/dashboard/stations');
    if (!check.ok) return;
  }
  renderLegend();
  $('filter').addEventListener('input', (e) => {
    state.filter = e.target.value.trim().toLowerCase();
    for (const s of state.stations.values()) applyFilter(s);
    layout();
  });
  try { $('density').value = localStorage.getItem('visionq.density') || 'auto'; } catch (_) { /* private mode */ }
  $('density').addEventListener('change', (e) => {
    try { localStorage.setItem('visionq.density', e.target.value); } catch (_) { /* private mode */ }
    layout();
  });
  $('banner-retry').addEventListener('click', () => { if (!state.ws) connect(); });
  $('detail-close').addEventListener('click', closeDetail);
  $('detail').addEventListener('click', (e) => { if (e.target === $('detail')) closeDetail(); });
  document.addEventListener('keydown', (e) => { if (e.key === 'Escape' && state.detail) closeDetail(); });
  $('history-form').addEventListener('submit', (e) => { e.preventDefault(); loadHistory(); });
  $('review-refresh').addEventListener('click', loadReview);
  $('review-station').addEventListener('change', () => {
    for (const item of review.items.values()) item.remove();
    review.items.clear();
    loadReview();
  });
  window.addEventListener('resize', layout);
  window.addEventListener('hashchange', route);
  route();
  connect();
  if ($('view-review').hidden) loadReview(); // the tab's count
  setInterval(watchdog, 1000);
  setInterval(() => { if (state.detail) loadHistory(); }, 5000);
  setInterval(pollMetrics, 2000);
  setInterval(loadDrift, 5000);
  loadAlerts();
  setInterval(loadAlerts, 2000);
  loadCounts();
  setInterval(loadCounts, 5000);
  setInterval(() => { if (!$('view-review').hidden) loadReview(); }, 5000);
}

start();
