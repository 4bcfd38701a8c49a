// The review queue: each frame waiting for a review with its picture, its decision
// and the reviewer's buttons (confirm, reject, correct), and the tab's count.
// GET /v1/review lists the frames decided needs_review that nobody reviewed yet
// (oldest first), /v1/review/{id}/image their kept images; POST /v1/review/{id} with
// {verdict, class_name?, code?} stores a review (a reviewer or admin token). See
// results/src/reviews.rs.

import { $, el } from './dom.js';
import { review } from './state.js';
import { api, authHeaders, withToken } from './access.js';
import { clock } from './time.js';
import { scoreText, paintFrame } from './frame.js';

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
    // The review is stored either way; say so when its image could not be kept with it.
    const image = answer.evidence && !answer.evidence.kept ? ` (${answer.evidence.message})` : '';
    out.textContent = `${rv.verdict}${rv.code ? ` as ${rv.code}` : ''} by ${rv.reviewer || 'you'}${image}`;
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

export async function loadReview() {
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
