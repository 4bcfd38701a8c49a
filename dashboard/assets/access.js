// Operator access: the token kept in localStorage, sent on every request (api), and
// the login form shown when the service refuses it.

import { $ } from './dom.js';
import { state } from './state.js';

// ---- operator access ------------------------------------------------------------
// When the service requires it (config.auth.required), the operator's token is kept
// in localStorage ('visionq.token') and sent on every request, and as ?token= where
// a browser cannot set headers (the WebSocket, <img>). See dashboard/src/access.rs.
export function token() {
  try { return localStorage.getItem('visionq.token') || ''; } catch (_) { return ''; }
}
export function authHeaders() {
  const t = token();
  return t ? { Authorization: `Bearer ${t}` } : {};
}
export function withToken(url) {
  const t = token();
  return t ? `${url}${url.includes('?') ? '&' : '?'}token=${encodeURIComponent(t)}` : url;
}
export async function api(path) {
  const r = await fetch(path, { headers: authHeaders(), cache: 'no-store' });
  if (r.status === 401 || r.status === 403) showLogin(r.status === 401 ? 'That token is not valid.' : 'That token may not read the dashboard: use an operator token.');
  return r;
}
export function showLogin(why) {
  if (state.ws) { state.ws.onclose = null; state.ws.close(); state.ws = null; }
  $('login-text').textContent = why || 'This dashboard needs an operator token.';
  $('login').hidden = false;
  $('login-token').focus();
}
export function setupLogin() {
  $('login').addEventListener('submit', (e) => {
    e.preventDefault();
    try { localStorage.setItem('visionq.token', $('login-token').value.trim()); } catch (_) { /* private mode */ }
    location.reload();
  });
}
