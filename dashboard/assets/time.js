// Time as the page shows it: the server's clock, ages ("12 s"), clock times.

import { state } from './state.js';

// ---- time -----------------------------------------------------------------------
export function serverNow() { return Date.now() + state.offsetMs; }
export function age(ms) {
  if (ms < 0) ms = 0;
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min`;
  if (s < 86400) return `${Math.floor(s / 3600)} h`;
  return `${Math.floor(s / 86400)} d`;
}
export function ageText(ms) { return `${age(ms)} ago`; }
export function clock(iso) {
  const d = new Date(iso);
  return d.toLocaleTimeString([], { hour12: false });
}
