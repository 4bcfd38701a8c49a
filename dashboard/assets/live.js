// The live feed: the WebSocket /v1/dashboard/stream (a coalesced feed: a snapshot,
// then the stations that changed), its reconnection with backoff, the connection
// state and banner, and the watchdog that notices a silent connection.

import { $ } from './dom.js';
import { state } from './state.js';
import { withToken } from './access.js';
import { station, updateTile, refreshAge, renderSummary } from './tiles.js';
import { renderDetailStats } from './detail.js';

// ---- the live feed ----------------------------------------------------------------
function setConn(kind, text) {
  const c = $('conn');
  c.dataset.state = kind;
  $('conn-text').textContent = text;
}

export function connect() {
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
export function watchdog() {
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
