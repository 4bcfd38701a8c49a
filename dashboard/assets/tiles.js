// The live view's grid: one tile per station (its latest picture with boxes, frame
// count, objects, latency, age), the tiles' size and filter, and the header summary.

import { $, el } from './dom.js';
import { state } from './state.js';
import { api, withToken } from './access.js';
import { serverNow, age } from './time.js';
import { paintFrame, placeholder } from './frame.js';
import { openDetail, paintDetailFrame } from './detail.js';

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

export function station(name) {
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

export function updateTile(name, s) {
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

export function refreshAge(s) {
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

export function applyFilter(s) {
  const f = state.filter;
  s.tile.hidden = !!f && !s.tile.dataset.station.toLowerCase().includes(f);
}

// Tile size: 'fit screen' picks the largest tiles that show every station at once
// (down to a readable minimum, then the page scrolls).
export function layout() {
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

export function renderSummary() {
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
