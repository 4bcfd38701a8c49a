// visionq station page (/station/{id}): the device's camera, frames sent over the
// station WebSocket (/v1/stations/{id}/ws, docs/STREAMING.md) at a chosen rate and
// JPEG quality, and the last answered frame shown with its boxes and decision.
// Vanilla JavaScript, no dependencies: it must run on a cheap device's browser.
//
// Flow control is the server's window: a frame is captured only while fewer than
// `window` frames are unanswered, so a slow pipeline makes the page send less, never
// queue more ("not sent" counts the ticks skipped). Each frame's picture is kept
// until its answer comes, so the boxes are drawn on the very frame they belong to.
'use strict';

import { drawBoxes, scoreText } from './boxes.js';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const station = decodeURIComponent(location.pathname.split('/')[2] || '');

const state = {
  config: { accept_threshold: 0.85, low_threshold: 0.65, auth: { required: false } },
  ws: null,
  running: false,
  window: 1,
  next: 1,
  pending: new Map(), // id -> { url (the frame's picture), sentAt }
  timer: null,
  attempt: 0,
  counts: { sent: 0, results: 0, errors: 0, skipped: 0, dropped: 0 },
  shownUrl: null,
};

// ---- token: kept per station in localStorage; ?token= once (kiosk set-up) ----------
const tokenKey = `visionq.station-token.${station}`;
function token() {
  try { return localStorage.getItem(tokenKey) || ''; } catch (_) { return ''; }
}
function keepToken(t) {
  try { localStorage.setItem(tokenKey, t); } catch (_) { /* private mode: this page only */ }
  state.sessionToken = t;
}
if (params.has('token')) {
  keepToken(params.get('token'));
  params.delete('token');
  const rest = params.toString();
  history.replaceState(null, '', `${location.pathname}${rest ? `?${rest}` : ''}`);
}
function currentToken() { return token() || state.sessionToken || ''; }

function showLogin(why) {
  $('login-text').textContent = why;
  $('login').hidden = false;
  $('login-token').focus();
}

// ---- what the page shows -----------------------------------------------------------
function setConn(s, text) {
  $('conn').dataset.state = s;
  $('conn-text').textContent = text;
}

function renderStats() {
  const c = state.counts;
  for (const [k, v] of Object.entries(c)) {
    $('stats').dataset[k] = String(v);
    $(`n-${k}`).textContent = String(v);
  }
  $('n-flight').textContent = String(state.pending.size);
  $('n-window').textContent = state.ws && state.ws.readyState === WebSocket.OPEN ? String(state.window) : '–';
}

const OUTCOME_TEXT = {
  accepted: 'accepted', needs_review: 'needs review', mismatch: 'mismatch', nothing: 'nothing found',
  expired: 'expired', error: 'error',
};

function showResult(id, result) {
  const frame = state.pending.get(id);
  if (frame) {
    if (state.shownUrl) URL.revokeObjectURL(state.shownUrl);
    state.shownUrl = frame.url;
    $('shown').src = frame.url;
    $('latency').textContent = `${Math.round(performance.now() - frame.sentAt)} ms`;
    state.pending.delete(id);
  }
  drawBoxes($('boxes'), result.status === 'ok' ? result.detections : [], state.config);
  $('shown').dataset.frameId = result.frame_id || '';
  const note = $('note');
  note.hidden = result.status === 'ok';
  note.textContent = result.status === 'ok' ? '' : `${result.status}: ${result.error || ''}`;
  // The decision, when the pipeline makes one; else the best detection against the
  // accept threshold, so the line still has a clear accept state.
  const d = result.decision;
  let outcome;
  let detail = '';
  if (d && d.outcome) {
    outcome = d.outcome;
    const what = [d.code, d.class_name].filter(Boolean).join(' · ');
    detail = [what, d.score != null ? scoreText(d.score, state.config) : '', d.reason || ''].filter(Boolean).join(' — ');
  } else if (result.status !== 'ok') {
    outcome = result.status === 'expired' ? 'expired' : 'error';
    detail = result.error || '';
  } else {
    const best = (result.detections || []).reduce((a, b) => (!a || b.score > a.score ? b : a), null);
    outcome = !best ? 'nothing' : best.score >= state.config.accept_threshold ? 'accepted' : 'needs_review';
    if (best) detail = `${best.class_name} ${scoreText(best.score, state.config)}`;
  }
  $('decision').dataset.outcome = outcome;
  $('decision-outcome').textContent = OUTCOME_TEXT[outcome] || outcome;
  $('decision-detail').textContent = detail;
}

function forget(id) {
  const frame = state.pending.get(id);
  if (frame) {
    URL.revokeObjectURL(frame.url);
    state.pending.delete(id);
  }
}

// ---- the stream ------------------------------------------------------------------
function streamUrl() {
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  const q = new URLSearchParams({ mode: 'newest' });
  const t = currentToken();
  if (t) q.set('token', t);
  return `${scheme}://${location.host}/v1/stations/${encodeURIComponent(station)}/ws?${q}`;
}

function connect() {
  if (!state.running) return;
  if (state.config.auth.required && !currentToken()) {
    showLogin('This station needs its token to send frames.');
    return;
  }
  setConn('connecting', 'connecting…');
  let opened = false;
  const ws = new WebSocket(streamUrl());
  ws.binaryType = 'arraybuffer';
  state.ws = ws;
  ws.onmessage = (e) => {
    let m;
    try { m = JSON.parse(e.data); } catch (_) { return; }
    if (m.type === 'hello') {
      opened = true;
      state.attempt = 0;
      state.window = m.window || 1;
      setConn('live', `live · window ${state.window}`);
    } else if (m.type === 'result') {
      state.counts.results++;
      showResult(m.id, m.result);
    } else if (m.type === 'error') {
      state.counts.errors++;
      $('last-error').textContent = `frame ${m.id ?? '?'}: ${m.code} — ${m.error}`;
      if (m.id != null) forget(m.id);
    } else if (m.type === 'timeout') {
      state.counts.errors++;
      $('last-error').textContent = `frame ${m.id}: no result in time (${m.error || 'timeout'})`;
      forget(m.id);
    } else if (m.type === 'skipped') {
      state.counts.skipped++;
      forget(m.id);
    }
    renderStats();
  };
  ws.onclose = (e) => {
    if (state.ws !== ws) return;
    state.ws = null;
    // Frames unanswered when the socket closed will not be answered on another one.
    for (const id of [...state.pending.keys()]) forget(id);
    renderStats();
    if (!opened && (e.code === 1006 || e.code === 1002) && state.config.auth.required) {
      // A refused upgrade (bad or missing token) closes before any hello.
      showLogin('The server refused the stream: check the station token.');
      setConn('down', 'refused');
      return;
    }
    if (!state.running) { setConn('idle', 'stopped'); return; }
    const wait = Math.min(10000, 500 * 2 ** state.attempt++);
    setConn('down', `disconnected (${e.code}); retrying in ${Math.round(wait / 1000)} s`);
    setTimeout(connect, wait);
  };
}

// ---- the camera ------------------------------------------------------------------
const grab = document.createElement('canvas');

function tick() {
  const ws = state.ws;
  const video = $('camera');
  if (!ws || ws.readyState !== WebSocket.OPEN || !video.videoWidth) return;
  if (state.pending.size >= state.window) {
    state.counts.dropped++;
    renderStats();
    return;
  }
  grab.width = video.videoWidth;
  grab.height = video.videoHeight;
  grab.getContext('2d').drawImage(video, 0, 0);
  const id = state.next++;
  const quality = Number($('quality').value);
  state.pending.set(id, { url: null, sentAt: performance.now() });
  grab.toBlob((blob) => {
    const frame = state.pending.get(id);
    if (!blob || !frame || state.ws !== ws || ws.readyState !== WebSocket.OPEN) { forget(id); return; }
    frame.url = URL.createObjectURL(blob);
    frame.sentAt = performance.now();
    ws.send(JSON.stringify({ id, captured_at: new Date().toISOString() }));
    ws.send(blob);
    state.counts.sent++;
    renderStats();
  }, 'image/jpeg', quality);
}

function schedule() {
  clearInterval(state.timer);
  state.timer = setInterval(tick, 1000 / Number($('fps').value));
}

async function start() {
  try {
    const media = await navigator.mediaDevices.getUserMedia({ audio: false, video: { width: { ideal: 1280 }, height: { ideal: 720 } } });
    const video = $('camera');
    video.srcObject = media;
    await video.play();
  } catch (e) {
    setConn('down', 'no camera');
    $('last-error').textContent = `The camera could not be opened: ${e.name} ${e.message}`;
    return;
  }
  state.running = true;
  $('start').textContent = 'Stop';
  schedule();
  connect();
}

function stop() {
  state.running = false;
  clearInterval(state.timer);
  const video = $('camera');
  if (video.srcObject) for (const t of video.srcObject.getTracks()) t.stop();
  video.srcObject = null;
  if (state.ws) state.ws.close(1000);
  $('start').textContent = 'Start camera';
  setConn('idle', 'stopped');
}

async function init() {
  $('station-name').textContent = station;
  document.title = `visionq · ${station}`;
  try {
    const r = await fetch('/v1/dashboard/config');
    if (r.ok) state.config = await r.json();
  } catch (_) { /* the defaults above */ }
  if (params.has('fps')) {
    const fps = String(Math.max(0.2, Math.min(30, Number(params.get('fps')) || 2)));
    if (![...$('fps').options].some((o) => o.value === fps)) $('fps').append(new Option(fps));
    $('fps').value = fps;
  }
  if (params.has('quality')) $('quality').value = params.get('quality');
  $('quality-value').textContent = Number($('quality').value).toFixed(2);
  $('quality').addEventListener('input', () => { $('quality-value').textContent = Number($('quality').value).toFixed(2); });
  $('fps').addEventListener('change', () => { if (state.running) schedule(); });
  $('start').addEventListener('click', () => (state.running ? stop() : start()));
  $('login').addEventListener('submit', (e) => {
    e.preventDefault();
    keepToken($('login-token').value.trim());
    $('login').hidden = true;
    if (state.running) connect(); else start();
  });
  renderStats();
  if (params.get('autostart') === '1') start();
}

init();
