// visionq dashboard. Vanilla JavaScript, no dependencies, served by the results role.
// Live view: /v1/dashboard/stream (a coalesced feed: a snapshot, then the stations
// that changed) and /v1/stations/{s}/latest.jpg. Pipeline view: Prometheus text from
// /metrics (and the other roles' metrics the results role relays), every 2 s.
'use strict';

import { confClass as conf, scoreText as scoreLabel, drawBoxes } from './boxes.js';

const $ = (id) => document.getElementById(id);
const el = (tag, cls, text) => {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
};

const state = {
  config: { accept_threshold: 0.85, low_threshold: 0.65, stale_after_ms: 10000, metrics_sources: [{ name: 'this process', url: '/metrics' }] },
  stations: new Map(), // name -> { summary, result (shown frame's result), shownId, tile, loading }
  offsetMs: 0,         // server clock - browser clock
  ws: null,
  attempt: 0,
  retryAt: 0,
  retryTimer: null,
  lastMessageAt: 0,
  filter: '',
  detail: null,        // station name shown in the detail panel
  frameRates: [],      // [{t, frames}] for the header's frames/s
};

// ---- operator access ------------------------------------------------------------
// When the service requires it (config.auth.required), the operator's token is kept
// in localStorage ('visionq.token') and sent on every request, and as ?token= where
// a browser cannot set headers (the WebSocket, <img>). See dashboard/src/access.rs.
function token() {
  try { return localStorage.getItem('visionq.token') || ''; } catch (_) { return ''; }
}
function authHeaders() {
  const t = token();
  return t ? { Authorization: `Bearer ${t}` } : {};
}
function withToken(url) {
  const t = token();
  return t ? `${url}${url.includes('?') ? '&' : '?'}token=${encodeURIComponent(t)}` : url;
}
async function api(path) {
  const r = await fetch(path, { headers: authHeaders(), cache: 'no-store' });
  if (r.status === 401 || r.status === 403) showLogin(r.status === 401 ? 'That token is not valid.' : 'That token may not read the dashboard: use an operator token.');
  return r;
}
function showLogin(why) {
  if (state.ws) { state.ws.onclose = null; state.ws.close(); state.ws = null; }
  $('login-text').textContent = why || 'This dashboard needs an operator token.';
  $('login').hidden = false;
  $('login-token').focus();
}
function setupLogin() {
  $('login').addEventListener('submit', (e) => {
    e.preventDefault();
    try { localStorage.setItem('visionq.token', $('login-token').value.trim()); } catch (_) { /* private mode */ }
    location.reload();
  });
}

// ---- alerts --------------------------------------------------------------------
// GET /v1/alerts: the alert rules' ([[rule]]) alerts firing now, the most severe
// first, shown under the header while any fires (of the stations the token reads).
async function loadAlerts() {
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

// ---- line and zone counts -------------------------------------------------------
// GET /v1/counts: per station and line, the crossings in and out over the last hour;
// per zone, the entries and exits ([[line]], [[zone]]); shown while there are any.
async function loadCounts() {
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

// ---- confidence colours (boxes.js, shared with the station page) ---------------
function confClass(score) { return conf(score, state.config); }
function scoreText(score) { return scoreLabel(score, state.config); }

function renderLegend() {
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

// ---- time -----------------------------------------------------------------------
function serverNow() { return Date.now() + state.offsetMs; }
function age(ms) {
  if (ms < 0) ms = 0;
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min`;
  if (s < 86400) return `${Math.floor(s / 3600)} h`;
  return `${Math.floor(s / 86400)} d`;
}
function ageText(ms) { return `${age(ms)} ago`; }
function clock(iso) {
  const d = new Date(iso);
  return d.toLocaleTimeString([], { hour12: false });
}

// ---- a frame with its boxes -----------------------------------------------------
// `frame` is a .frame element; `result` the result whose boxes are drawn; `src` the
// image (already loaded, so picture and boxes change together).
function paintFrame(frame, result, picture) {
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

function placeholder(frame, text) {
  if (frame.querySelector('.stage')) return;
  frame.textContent = '';
  frame.append(el('div', 'placeholder', text));
}

// ---- tiles ----------------------------------------------------------------------
function makeTile(name) {
  const tile = el('article', 'tile');
  tile.dataset.station = name;
  tile.tabIndex = 0;
  tile.setAttribute('role', 'button');
  tile.setAttribute('aria-label', `station ${name}: open its history`);
  const head = el('header', 'tile-head');
  head.append(el('span', 'name', name), el('span', 'badge', ''));
  const frame = el('div', 'frame');
  placeholder(frame, 'waiting for a frame…');
  const foot = el('footer', 'tile-foot');
  const frames = el('span', 'frames');
  frames.title = 'frames processed (since the results service started)';
  frames.append(el('b', 'count', '0'), el('span', 'unit', ' frames'));
  const dets = el('span', 'dets');
  dets.append(el('span', 'objs'), el('span', 'lat'));
  const age = el('span', 'age');
  age.append(el('span', 'agev'), el('span', 'ago', ' ago'));
  age.title = 'last frame received';
  foot.append(frames, dets, age);
  tile.append(head, frame, foot);
  tile.addEventListener('click', () => openDetail(name));
  tile.addEventListener('keydown', (e) => { if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); openDetail(name); } });
  return tile;
}

function placeTile(name, tile) {
  // Stations keep fixed places, sorted by name, so operators find them where they were.
  const grid = $('grid');
  const later = [...grid.children].find((t) => t.dataset.station.localeCompare(name, undefined, { numeric: true }) > 0);
  grid.insertBefore(tile, later || null);
}

function station(name) {
  let s = state.stations.get(name);
  if (!s) {
    s = { summary: null, result: null, shownId: null, tile: makeTile(name), loading: null };
    state.stations.set(name, s);
    placeTile(name, s.tile);
    applyFilter(s);
    layout();
  }
  return s;
}

function updateTile(name, s) {
  const sum = s.summary;
  if (!sum) return;
  const t = s.tile;
  t.dataset.frames = String(sum.frames);
  t.querySelector('.count').textContent = String(sum.frames);
  t.querySelector('.unit').textContent = sum.frames === 1 ? ' frame' : ' frames';
  const latest = sum.latest;
  const failed = latest && latest.status !== 'ok';
  t.classList.toggle('failed', !!failed);
  if (failed) {
    t.querySelector('.objs').textContent = latest.status;
    t.querySelector('.lat').textContent = '';
    t.querySelector('.dets').title = latest.error || '';
  } else if (!s.result && latest) {
    describeFrame(t, latest.detections, latest.latency_ms);
  }
  refreshAge(s);
  const p = sum.preview;
  if (p && p.result && p.result.frame_id === p.frame_id) s.pending = p.result;
  if (p && p.frame_id !== s.shownId && (!s.loading || s.loading !== p.frame_id)) loadPreview(name, s, p);
}

// The footer describes the frame in the picture: its objects and end-to-end latency.
function describeFrame(t, objects, latencyMs) {
  t.querySelector('.objs').textContent = `${objects} obj`;
  t.querySelector('.lat').textContent = ` · ${Math.round(latencyMs)} ms`;
  t.querySelector('.dets').title = 'objects in the frame shown · its end-to-end latency';
}

// Loads the new picture off-screen, then swaps picture and boxes at once.
function loadPreview(name, s, p) {
  const result = s.pending && s.pending.frame_id === p.frame_id ? s.pending : null;
  const show = (res, src) => {
    s.result = res;
    s.shownId = p.frame_id;
    s.tile.dataset.frameId = p.frame_id;
    paintFrame(s.tile.querySelector('.frame'), res, src);
    if (!s.tile.classList.contains('failed')) {
      describeFrame(s.tile, res.detections.length, Date.parse(res.completed_at) - Date.parse(res.received_at));
    }
    if (state.detail === name) paintDetailFrame();
  };
  const withResult = (res) => {
    s.loading = p.frame_id;
    const img = new Image();
    const done = () => { if (s.loading === p.frame_id) s.loading = null; };
    img.src = withToken(p.url);
    img.decode().then(() => { done(); show(res, img); }, () => {
      done();
      // Undecodable (an error result) or already replaced: show the boxes without it.
      if (res.status !== 'ok') show(res, '');
    });
  };
  if (result) {
    withResult(result);
  } else {
    s.loading = p.frame_id;
    api(`/v1/frames/${p.frame_id}`).then((r) => (r.ok ? r.json() : null)).then((res) => {
      s.loading = null;
      if (res) withResult(res);
    }).catch(() => { s.loading = null; });
  }
}

function refreshAge(s) {
  const sum = s.summary;
  if (!sum) return;
  const ms = serverNow() - Date.parse(sum.last_seen);
  const stale = ms > state.config.stale_after_ms;
  const t = s.tile;
  t.classList.toggle('stale', stale);
  t.querySelector('.agev').textContent = age(ms);
  const badge = t.querySelector('.badge');
  badge.textContent = stale ? 'STALLED' : (sum.latest && sum.latest.status !== 'ok' ? sum.latest.status.toUpperCase() : '');
}

function applyFilter(s) {
  const f = state.filter;
  s.tile.hidden = !!f && !s.tile.dataset.station.toLowerCase().includes(f);
}

// Tile size: 'fit screen' picks the largest tiles that show every station at once
// (down to a readable minimum, then the page scrolls).
function layout() {
  const grid = $('grid');
  $('empty').hidden = state.stations.size > 0;
  const choice = $('density').value;
  if (choice !== 'auto') {
    grid.style.setProperty('--tile-min', `${choice}px`);
    return;
  }
  const n = [...state.stations.values()].filter((s) => !s.tile.hidden).length || 1;
  const width = grid.clientWidth || window.innerWidth;
  const height = window.innerHeight - grid.getBoundingClientRect().top - 12;
  const gap = 8;
  let best = 150;
  for (let w = Math.min(520, width); w >= 150; w -= 10) {
    const cols = Math.max(1, Math.floor((width + gap) / (w + gap)));
    const tileW = (width - gap * (cols - 1)) / cols;
    const rows = Math.ceil(n / cols);
    if (rows * (tileW * 0.75 + 56 + gap) <= height) { best = w; break; }
  }
  grid.style.setProperty('--tile-min', `${best}px`);
}

function renderSummary() {
  let stalled = 0;
  let frames = 0;
  for (const s of state.stations.values()) {
    if (s.tile.classList.contains('stale')) stalled += 1;
    if (s.summary) frames += s.summary.frames;
  }
  const now = Date.now();
  state.frameRates.push({ t: now, frames });
  while (state.frameRates.length > 2 && now - state.frameRates[0].t > 5000) state.frameRates.shift();
  const first = state.frameRates[0];
  const rate = now > first.t ? Math.max(0, (frames - first.frames) / ((now - first.t) / 1000)) : 0;
  const sum = $('summary');
  sum.textContent = '';
  const item = (label, value, cls) => {
    const s = el('span', cls || '');
    s.append(el('b', '', value), ` ${label}`);
    sum.append(s);
  };
  item('stations', String(state.stations.size));
  item('stalled', String(stalled), stalled ? 'alarm' : '');
  item('frames/s', rate.toFixed(1));
}

// ---- the live feed ----------------------------------------------------------------
function setConn(kind, text) {
  const c = $('conn');
  c.dataset.state = kind;
  $('conn-text').textContent = text;
}

function connect() {
  clearTimeout(state.retryTimer);
  state.retryTimer = null;
  const proto = location.protocol === 'https:' ? 'wss' : 'ws';
  const url = withToken(`${proto}://${location.host}/v1/dashboard/stream`);
  let ws;
  try {
    ws = new WebSocket(url);
  } catch (_) {
    scheduleReconnect();
    return;
  }
  state.ws = ws;
  setConn(state.attempt ? 'down' : 'connecting', state.attempt ? 'reconnecting…' : 'connecting…');
  ws.onopen = () => {
    state.attempt = 0;
    state.lastMessageAt = Date.now();
    $('banner').hidden = true;
    document.body.classList.remove('disconnected');
    setConn('live', 'live');
  };
  ws.onmessage = (ev) => {
    state.lastMessageAt = Date.now();
    let msg;
    try { msg = JSON.parse(ev.data); } catch (_) { return; }
    onFeed(msg);
  };
  ws.onclose = () => {
    if (state.ws !== ws) return;
    state.ws = null;
    scheduleReconnect();
  };
  ws.onerror = () => { /* onclose follows */ };
}

function scheduleReconnect() {
  state.attempt += 1;
  // Exponential backoff with jitter: 0.5 s, 1 s, 2 s, 4 s, then every 5 s or so.
  const base = Math.min(5000, 500 * 2 ** (state.attempt - 1));
  const delay = Math.round(base * (0.8 + Math.random() * 0.4));
  state.retryAt = Date.now() + delay;
  setConn('down', 'disconnected');
  document.body.classList.add('disconnected');
  $('banner').hidden = false;
  updateBanner();
  clearTimeout(state.retryTimer);
  state.retryTimer = setTimeout(connect, delay);
}

function updateBanner() {
  if ($('banner').hidden) return;
  const left = Math.max(0, Math.ceil((state.retryAt - Date.now()) / 1000));
  $('banner-text').textContent = state.ws
    ? `Reconnecting now (attempt ${state.attempt})…`
    : `Reconnecting in ${left} s (attempt ${state.attempt}).`;
}

function onFeed(msg) {
  if (msg.now) state.offsetMs = Date.parse(msg.now) - Date.now();
  for (const name of msg.removed || []) {
    const s = state.stations.get(name);
    if (s) { s.tile.remove(); state.stations.delete(name); }
  }
  for (const sum of msg.stations || []) {
    const s = station(sum.station);
    s.summary = sum;
    updateTile(sum.station, s);
  }
  if (state.detail && (msg.stations || []).some((x) => x.station === state.detail)) renderDetailStats();
  renderSummary();
}

// A connection that went silent (no heartbeat) is dead even if the socket does not know yet.
function watchdog() {
  if (state.ws && state.ws.readyState === WebSocket.OPEN && Date.now() - state.lastMessageAt > 6000) {
    const ws = state.ws;
    state.ws = null;
    ws.close();
    scheduleReconnect();
  }
  updateBanner();
  for (const s of state.stations.values()) refreshAge(s);
  renderSummary();
}

// ---- station detail -----------------------------------------------------------------
function openDetail(name) {
  state.detail = name;
  $('detail').hidden = false;
  $('detail-title').textContent = name;
  $('history-form').reset();
  paintDetailFrame();
  renderDetailStats();
  loadHistory();
  $('detail-close').focus();
}

function closeDetail() {
  const name = state.detail;
  state.detail = null;
  $('detail').hidden = true;
  const s = name && state.stations.get(name);
  if (s) s.tile.focus();
}

function paintDetailFrame() {
  const s = state.stations.get(state.detail);
  const frame = $('detail-frame');
  if (s && s.result) {
    paintFrame(frame, s.result, s.tile.querySelector('.stage img').getAttribute('src') || '');
  } else {
    frame.textContent = '';
    frame.append(el('div', 'placeholder', 'no frame to show yet'));
  }
}

function renderDetailStats() {
  const s = state.stations.get(state.detail);
  const sum = s && s.summary;
  $('detail-stats').textContent = sum
    ? `${sum.frames} frames · ${sum.errors} errors · ${sum.detections} objects · last frame ${ageText(serverNow() - Date.parse(sum.last_seen))}`
    : '';
}

async function loadHistory() {
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

// ---- pipeline view: Prometheus text -------------------------------------------------
function parseProm(text) {
  const out = [];
  for (const line of text.split('\n')) {
    if (!line || line[0] === '#') continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const labels = {};
    if (m[2]) {
      const re = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;
      let l;
      while ((l = re.exec(m[2]))) labels[l[1]] = l[2].replace(/\\n/g, '\n').replace(/\\(.)/g, '$1');
    }
    const raw = m[3];
    const value = raw === '+Inf' ? Infinity : raw === '-Inf' ? -Infinity : parseFloat(raw);
    out.push({ name: m[1], labels, value });
  }
  return out;
}

// Several processes' samples as one: counters and histograms add up; a queue's depth
// is the same queue seen from each process, so the largest reading wins.
function mergeSamples(lists) {
  const byKey = new Map();
  for (const list of lists) {
    for (const s of list) {
      const key = s.name + JSON.stringify(Object.entries(s.labels).sort());
      const prev = byKey.get(key);
      if (!prev) byKey.set(key, { ...s });
      else if (s.name === 'visionq_queue_depth') prev.value = Math.max(prev.value, s.value);
      else prev.value += s.value;
    }
  }
  return [...byKey.values()];
}

function pick(samples, name, where) {
  return samples.filter((s) => s.name === name && Object.entries(where || {}).every(([k, v]) => s.labels[k] === v));
}
function total(samples, name, where) {
  return pick(samples, name, where).reduce((a, s) => a + s.value, 0);
}

// Cumulative buckets of a histogram (optionally one label value), sorted by bound.
function buckets(samples, name, where) {
  const m = new Map();
  for (const s of pick(samples, `${name}_bucket`, where)) {
    const le = s.labels.le === '+Inf' ? Infinity : parseFloat(s.labels.le);
    m.set(le, (m.get(le) || 0) + s.value);
  }
  return [...m.entries()].sort((a, b) => a[0] - b[0]).map(([le, count]) => ({ le, count }));
}

function subtractBuckets(now, before) {
  if (!before) return now;
  return now.map((b) => {
    const p = before.find((x) => x.le === b.le);
    return { le: b.le, count: Math.max(0, b.count - (p ? p.count : 0)) };
  });
}

// histogram_quantile: linear interpolation inside the bucket holding the quantile.
function quantile(q, bs) {
  if (!bs.length) return NaN;
  const n = bs[bs.length - 1].count;
  if (!n) return NaN;
  const rank = q * n;
  let prevLe = 0;
  let prevCount = 0;
  for (const b of bs) {
    if (b.count >= rank) {
      if (b.le === Infinity) return prevLe;
      const inBucket = b.count - prevCount;
      return inBucket ? prevLe + (b.le - prevLe) * ((rank - prevCount) / inBucket) : b.le;
    }
    prevLe = b.le;
    prevCount = b.count;
  }
  return prevLe;
}

const pipeline = { prev: null, history: [], lastError: '', timer: null };

async function pollMetrics() {
  if (document.hidden) return;
  const sources = state.config.metrics_sources || [{ name: 'this process', url: '/metrics' }];
  const texts = await Promise.all(sources.map(async (src) => {
    try {
      const r = await api(src.url);
      if (!r.ok) throw new Error(`HTTP ${r.status}`);
      return { src, text: await r.text() };
    } catch (e) {
      return { src, error: e.message };
    }
  }));
  const ok = texts.filter((t) => t.text !== undefined);
  const srcNote = texts.map((t) => `${t.src.name}${t.error ? ` (unreachable: ${t.error})` : ''}`).join(' · ');
  $('sources').textContent = `Metrics from ${srcNote}, every 2 s. Updated ${clock(new Date().toISOString())}.`;
  $('view-pipeline').classList.toggle('stale-data', ok.length === 0);
  if (!ok.length) return;
  const samples = mergeSamples(ok.map((t) => parseProm(t.text)));
  const now = Date.now();
  const snap = { t: now, samples };
  renderPipeline(snap, pipeline.prev);
  pipeline.prev = snap;
}

function rate(now, prev, name, where) {
  if (!prev) return NaN;
  const dt = (now.t - prev.t) / 1000;
  const a = total(now.samples, name, where);
  const b = total(prev.samples, name, where);
  // A restarted process starts its counters again.
  const d = a >= b ? a - b : a;
  return dt > 0 ? d / dt : NaN;
}

function fmt(v, digits = 1) {
  if (v === undefined || Number.isNaN(v) || !Number.isFinite(v)) return '–';
  return v.toFixed(digits);
}
function fmtMs(seconds) {
  if (Number.isNaN(seconds) || !Number.isFinite(seconds)) return '–';
  const ms = seconds * 1000;
  return ms >= 100 ? `${Math.round(ms)} ms` : `${ms.toFixed(1)} ms`;
}

function kv(parent, key, value, bad, colour) {
  const d = el('div', `kv${bad ? ' bad' : ''}`);
  const k = el('span', 'k', key);
  if (colour) {
    const dot = el('i', 'swatch');
    dot.style.background = colour;
    k.prepend(dot);
  }
  d.append(el('span', 'v', value), k);
  parent.append(d);
  return d;
}

function bars(parent, rows, unit) {
  parent.textContent = '';
  const max = Math.max(1, ...rows.map((r) => r.value));
  const box = el('div', 'bars');
  for (const r of rows) {
    const row = el('div', 'bar');
    const track = el('div', 'track');
    const fill = el('div', `fill ${r.cls || ''}`);
    fill.style.width = `${(100 * r.value) / max}%`;
    track.append(fill);
    row.append(el('span', 'k', r.label), track, el('span', 'n', `${fmt(r.value, r.digits || 0)}${unit || ''}`));
    row.title = r.label;
    box.append(row);
  }
  if (!rows.length) box.append(el('span', 'muted', 'nothing yet'));
  parent.append(box);
}

function sparkline(svg, series, colours, unit) {
  svg.textContent = '';
  const note = svg.nextElementSibling;
  const ns = 'http://www.w3.org/2000/svg';
  const n = series[0] ? series[0].length : 0;
  if (n < 2) return;
  const max = Math.max(1e-9, ...series.flat().filter(Number.isFinite));
  series.forEach((values, i) => {
    const pl = document.createElementNS(ns, 'polyline');
    const pts = values.map((v, j) => `${((j / (n - 1)) * 600).toFixed(1)},${(115 - (Number.isFinite(v) ? v : 0) / max * 105).toFixed(1)}`);
    pl.setAttribute('points', pts.join(' '));
    pl.setAttribute('stroke', colours[i]);
    svg.append(pl);
  });
  if (note) note.textContent = `last ${Math.round((n * 2) / 60 * 10) / 10} min · top of the chart ${fmt(max, max < 10 ? 2 : 0)}${unit}`;
}

function renderPipeline(now, prev) {
  const s = now.samples;
  // Throughput per stage.
  const stages = [
    ['ingest', 'visionq_ingest_accepted_total', {}],
    ['preprocess', 'visionq_stage_frames_total', { stage: 'preprocess', outcome: 'ok' }],
    ['infer', 'visionq_stage_frames_total', { stage: 'infer', outcome: 'ok' }],
    ['persisted', 'visionq_results_persisted_total', {}],
  ];
  const tp = $('throughput');
  tp.textContent = '';
  const colours = { ingest: '#60a5fa', infer: '#22c55e', persisted: '#f59e0b' };
  const rates = stages.map(([label, name, where]) => {
    const r = rate(now, prev, name, where);
    kv(tp, `${label} · ${fmt(total(s, name, where), 0)} total`, fmt(r), false, colours[label]);
    return r;
  });
  const detRate = rate(now, prev, 'visionq_detections_total');
  kv(tp, 'objects/s', fmt(detRate));

  // End-to-end latency: over the last interval when frames completed in it, and since start.
  const e2e = buckets(s, 'visionq_stage_duration_seconds', { stage: 'end_to_end' });
  const e2ePrev = prev ? buckets(prev.samples, 'visionq_stage_duration_seconds', { stage: 'end_to_end' }) : null;
  const windowed = subtractBuckets(e2e, e2ePrev);
  const useWindow = prev && windowed.length && windowed[windowed.length - 1].count > 0;
  const lb = useWindow ? windowed : e2e;
  const lat = $('latency');
  lat.textContent = '';
  const p = [0.5, 0.9, 0.99].map((q) => quantile(q, lb));
  kv(lat, `p50 ${useWindow ? 'last 2 s' : 'since start'}`, fmtMs(p[0]));
  kv(lat, 'p90', fmtMs(p[1]));
  kv(lat, 'p99', fmtMs(p[2]));
  kv(lat, 'p99 since start', fmtMs(quantile(0.99, e2e)));

  pipeline.history.push({ ingest: rates[0], infer: rates[2], persisted: rates[3], p90: useWindow ? p[1] * 1000 : NaN });
  if (pipeline.history.length > 150) pipeline.history.shift();
  const h = pipeline.history;
  sparkline($('throughput-chart'), [h.map((x) => x.ingest), h.map((x) => x.infer), h.map((x) => x.persisted)],
    [colours.ingest, colours.infer, colours.persisted], ' frames/s');
  sparkline($('latency-chart'), [h.map((x) => x.p90)], ['#f472b6'], ' ms p90');

  // Batch sizes: frames per forward pass, distribution since start.
  const bb = buckets(s, 'visionq_infer_batch_size');
  const bsum = total(s, 'visionq_infer_batch_size_sum');
  const bcount = total(s, 'visionq_infer_batch_size_count');
  const histo = el('div', 'histo');
  let prevCount = 0;
  let prevLe = 0;
  const cols = [];
  for (const b of bb) {
    const n = b.count - prevCount;
    const label = b.le === Infinity ? `>${prevLe}` : (b.le - prevLe > 1 ? `${prevLe + 1}–${b.le}` : `${b.le}`);
    cols.push({ label, n });
    prevCount = b.count;
    prevLe = b.le;
  }
  while (cols.length && cols[cols.length - 1].n === 0 && cols.length > 8) cols.pop();
  const maxN = Math.max(1, ...cols.map((c) => c.n));
  for (const c of cols) {
    const col = el('div', 'col');
    const fill = el('div', 'fill');
    fill.style.height = `${(100 * c.n) / maxN}%`;
    col.append(el('span', 'n', String(c.n)), fill, el('span', 'k', c.label));
    col.title = `${c.n} batches of ${c.label}`;
    histo.append(col);
  }
  const batches = $('batches');
  batches.textContent = '';
  const bk = el('div', 'kv-row');
  kv(bk, 'mean batch', fmt(bcount ? bsum / bcount : NaN, 2));
  kv(bk, 'batches', fmt(bcount, 0));
  kv(bk, 'batches/s', fmt(rate(now, prev, 'visionq_infer_batch_size_count')));
  batches.append(bk, histo);

  // Queue depths and work in flight.
  const q = $('queues');
  const depthRows = pick(s, 'visionq_queue_depth').map((x) => ({ label: `queue ${x.labels.queue}`, value: x.value, cls: x.value > 1000 ? 'bad' : x.value > 100 ? 'warn' : '' }));
  const flightRows = pick(s, 'visionq_in_flight').map((x) => ({ label: `in flight ${x.labels.stage}`, value: x.value }));
  bars(q, [...depthRows.sort((a, b) => a.label.localeCompare(b.label)), ...flightRows]);

  // Errors and dead letters.
  const errs = $('errors');
  errs.textContent = '';
  const ek = el('div', 'kv-row');
  const rejected = total(s, 'visionq_ingest_rejected_total');
  const dead = total(s, 'visionq_dead_lettered_total');
  const failedStages = pick(s, 'visionq_stage_frames_total').filter((x) => x.labels.outcome !== 'ok').reduce((a, x) => a + x.value, 0);
  const failedResults = pick(s, 'visionq_results_persisted_total').filter((x) => x.labels.status !== 'ok').reduce((a, x) => a + x.value, 0);
  kv(ek, 'refused at ingest', fmt(rejected, 0), rejected > 0);
  kv(ek, 'dead-lettered', fmt(dead, 0), dead > 0);
  kv(ek, 'error results', fmt(Math.max(failedStages, failedResults), 0), failedResults > 0);
  kv(ek, 'refused/s', fmt(rate(now, prev, 'visionq_ingest_rejected_total')));
  errs.append(ek);
  const reasons = [
    ...pick(s, 'visionq_ingest_rejected_total').map((x) => ({ label: `refused: ${x.labels.reason}`, value: x.value, cls: 'warn' })),
    ...pick(s, 'visionq_dead_lettered_total').map((x) => ({ label: `dead ${x.labels.queue}: ${x.labels.reason}`, value: x.value, cls: 'bad' })),
  ].filter((r) => r.value > 0);
  const rb = el('div');
  bars(rb, reasons);
  errs.append(rb);

  // Per-stage latency.
  const table = $('stages');
  table.textContent = '';
  const head = el('tr');
  for (const [t, c] of [['stage', ''], ['p50', 'num'], ['p95', 'num'], ['p99', 'num'], ['count', 'num'], ['/s', 'num']]) head.append(el('th', c, t));
  table.append(head);
  const stageNames = [...new Set(pick(s, 'visionq_stage_duration_seconds_count').map((x) => x.labels.stage))].sort();
  for (const st of stageNames) {
    const bs = buckets(s, 'visionq_stage_duration_seconds', { stage: st });
    const tr = el('tr');
    tr.append(el('td', '', st.replace(/_/g, ' ')));
    for (const qq of [0.5, 0.95, 0.99]) tr.append(el('td', 'num', fmtMs(quantile(qq, bs))));
    tr.append(el('td', 'num', fmt(total(s, 'visionq_stage_duration_seconds_count', { stage: st }), 0)));
    tr.append(el('td', 'num', fmt(rate(now, prev, 'visionq_stage_duration_seconds_count', { stage: st }))));
    table.append(tr);
  }

  // Detections by class.
  const classes = pick(s, 'visionq_detections_total').map((x) => ({ label: x.labels.class, value: x.value }))
    .sort((a, b) => b.value - a.value).slice(0, 10);
  bars($('classes'), classes);

  // Service facts.
  const svc = $('service');
  svc.textContent = '';
  const sk = el('div', 'kv-row');
  const model = pick(s, 'visionq_model_info').map((x) => `${x.labels.name} ${x.labels.version}`).join(', ');
  kv(sk, 'model', model || '–').classList.add('small');
  kv(sk, 'live clients', fmt(total(s, 'visionq_websocket_clients'), 0));
  kv(sk, 'preview store', `${fmt(total(s, 'visionq_dashboard_preview_store_bytes') / 1048576, 1)} MiB`);
  kv(sk, 'mode', state.config.mode || '–');
  svc.append(sk);
}

// ---- review queue ------------------------------------------------------------------
// GET /v1/review lists the frames decided needs_review that nobody reviewed yet
// (oldest first), /v1/review/{id}/image their kept images; POST /v1/review/{id} with
// {verdict, class_name?, code?} stores a review (a reviewer or admin token). See
// results/src/reviews.rs.
const review = { items: new Map(), timer: null };

function decisionText(d) {
  if (!d) return 'no decision';
  const parts = [d.outcome.replace('_', ' ')];
  if (d.class_name) parts.push(d.class_name);
  if (d.code) parts.push(`code ${d.code}`);
  if (d.score != null) parts.push(`score ${scoreText(d.score)}`);
  if (d.similarity != null) parts.push(`similarity ${d.similarity.toFixed(2)}`);
  return parts.join(' · ');
}

function reviewItem(r) {
  const item = el('article', 'review-item');
  item.dataset.frame = r.frame_id;
  const frame = el('div', 'frame');
  paintFrame(frame, r, withToken(`/v1/review/${r.frame_id}/image`));
  const img = frame.querySelector('img');
  img.onerror = () => { frame.textContent = ''; frame.append(el('div', 'placeholder', 'image not kept')); };
  const facts = el('div', 'facts');
  facts.append(el('div', 'title', `${r.station} · ${clock(r.received_at)}`));
  facts.append(el('div', 'decision', decisionText(r.decision)));
  if (r.decision && r.decision.reason) facts.append(el('div', 'reason', r.decision.reason));
  const actions = el('div', 'actions');
  const confirm = el('button', 'confirm', 'Confirm');
  const reject = el('button', 'reject', 'Reject');
  const cls = el('input', 'class-input');
  cls.placeholder = 'class';
  cls.setAttribute('aria-label', 'corrected class');
  const code = el('input', 'code-input');
  code.placeholder = 'code';
  code.setAttribute('aria-label', 'corrected code');
  const correct = el('button', 'correct', 'Correct');
  confirm.type = reject.type = correct.type = 'button';
  confirm.addEventListener('click', () => sendReview(item, { verdict: 'confirmed' }));
  reject.addEventListener('click', () => sendReview(item, { verdict: 'rejected' }));
  correct.addEventListener('click', () => {
    const body = { verdict: 'corrected' };
    if (cls.value.trim()) body.class_name = cls.value.trim();
    if (code.value.trim()) body.code = code.value.trim();
    sendReview(item, body);
  });
  actions.append(confirm, reject, cls, code, correct);
  item.append(frame, facts, actions, el('div', 'outcome'));
  return item;
}

async function sendReview(item, body) {
  const out = item.querySelector('.outcome');
  out.className = 'outcome';
  out.textContent = 'saving…';
  for (const b of item.querySelectorAll('button')) b.disabled = true;
  let r;
  try {
    r = await fetch(`/v1/review/${item.dataset.frame}`, {
      method: 'POST',
      headers: { ...authHeaders(), 'Content-Type': 'application/json' },
      body: JSON.stringify(body),
    });
  } catch (e) {
    r = null;
  }
  const answer = r ? await r.json().catch(() => ({})) : { error: 'the service did not answer' };
  if (r && r.ok) {
    const rv = answer.review || {};
    out.textContent = `${rv.verdict}${rv.code ? ` as ${rv.code}` : ''} by ${rv.reviewer || 'you'}`;
    item.classList.add('done');
    item.dataset.done = '1';
    review.items.delete(item.dataset.frame);
    updateReviewCount();
    return;
  }
  out.classList.add('error');
  out.setAttribute('role', 'alert');
  out.textContent = answer.error || `refused (${r ? r.status : 'no answer'})`;
  for (const b of item.querySelectorAll('button')) b.disabled = false;
}

function updateReviewCount() {
  const n = review.items.size;
  $('review-count').textContent = n ? String(n) + (review.more ? '+' : '') : '';
  $('review-empty').hidden = n > 0 || $('review-list').querySelector('.review-item.done') !== null;
}

async function loadReview() {
  const station = $('review-station').value.trim();
  const q = new URLSearchParams({ limit: '50' });
  if (station) q.set('station', station);
  let r;
  try { r = await api(`/v1/review?${q}`); } catch (_) { $('review-note').textContent = 'the service did not answer'; return; }
  const answer = await r.json().catch(() => ({}));
  if (!r.ok) {
    $('review-note').textContent = answer.code === 'decisions_off' ? 'No decisions are made here (no rules file), so nothing is queued.' : (answer.error || `refused (${r.status})`);
    return;
  }
  $('review-note').textContent = '';
  review.more = Boolean(answer.next);
  const list = $('review-list');
  const seen = new Set();
  for (const res of answer.items) {
    seen.add(res.frame_id);
    if (!review.items.has(res.frame_id)) {
      const item = reviewItem(res);
      review.items.set(res.frame_id, item);
      list.append(item);
    }
  }
  // Reviewed elsewhere (or gone with retention): leave the list, unless being edited.
  for (const [id, item] of review.items) {
    if (!seen.has(id) && !item.contains(document.activeElement)) { item.remove(); review.items.delete(id); }
  }
  updateReviewCount();
}

// ---- views -------------------------------------------------------------------------
function route() {
  const view = ['#pipeline', '#review'].includes(location.hash) ? location.hash.slice(1) : 'live';
  for (const name of ['live', 'pipeline', 'review']) {
    $(`view-${name}`).hidden = name !== view;
    if (name === view) $(`tab-${name}`).setAttribute('aria-current', 'page'); else $(`tab-${name}`).removeAttribute('aria-current');
  }
  if (view === 'live') layout();
  else if (view === 'pipeline') pollMetrics();
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
  loadAlerts();
  setInterval(loadAlerts, 2000);
  loadCounts();
  setInterval(loadCounts, 5000);
  setInterval(() => { if (!$('view-review').hidden) loadReview(); }, 5000);
}

start();
