// The pipeline view: Prometheus text from /metrics (and the other roles' metrics the
// results role relays), every 2 s, drawn as throughput, latency, batch sizes, queues,
// errors, per-stage latency, detections by class and service facts.

import { $, el } from './dom.js';
import { state } from './state.js';
import { api } from './access.js';
import { clock } from './time.js';
import { parseProm, mergeSamples, pick, total, buckets, subtractBuckets, quantile, rate } from './prom.js';

// The view's own state: the previous scrape (for rates and the latency window) and
// the trend charts' points.
const pipeline = { prev: null, history: [], lastError: '', timer: null };

export async function pollMetrics() {
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

  renderModels(now, prev);

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

// Per model version and route (active, canary, shadow): frames/s, latency from
// receipt to result (published frames only), mean confidence of the model's
// detections, and a shadow candidate's agreement with the active version.
function renderModels(now, prev) {
  const s = now.samples;
  const table = $('models');
  const head = el('tr');
  for (const [t, c] of [['model', ''], ['route', ''], ['frames', 'num'], ['/s', 'num'], ['p50', 'num'], ['p95', 'num'], ['confidence', 'num'], ['agreement', 'num']]) {
    head.append(el('th', c, t));
  }
  const rows = pick(s, 'visionq_model_frames_total').sort((a, b) => a.labels.model.localeCompare(b.labels.model)
    || a.labels.version.localeCompare(b.labels.version) || a.labels.route.localeCompare(b.labels.route));
  const body = rows.map((x) => {
    const { model, version, route } = x.labels;
    const tr = el('tr', `model-${route}`);
    tr.dataset.model = `${model}:${version}`;
    tr.dataset.route = route;
    const lat = buckets(s, 'visionq_model_latency_seconds', { model, version });
    const published = route !== 'shadow' && lat.length && lat[lat.length - 1].count > 0;
    const scoreSum = total(s, 'visionq_detection_score_sum', { model });
    const scoreCount = total(s, 'visionq_detection_score_count', { model });
    const agree = (measure) => pick(s, 'visionq_model_agreement', { model, version, measure })[0];
    const [p, r] = [agree('precision'), agree('recall')];
    const agreement = route === 'shadow' && p && r ? `P ${fmt(p.value, 2)} · R ${fmt(r.value, 2)}` : '–';
    tr.append(el('td', '', `${model} ${version}`), el('td', '', route), el('td', 'num', fmt(x.value, 0)),
      el('td', 'num', fmt(rate(now, prev, 'visionq_model_frames_total', { model, version, route }))),
      el('td', 'num', published ? fmtMs(quantile(0.5, lat)) : '–'), el('td', 'num', published ? fmtMs(quantile(0.95, lat)) : '–'),
      el('td', 'num', route === 'shadow' || !scoreCount ? '–' : fmt(scoreSum / scoreCount, 2)), el('td', 'num', agreement));
    return tr;
  });
  table.replaceChildren(head, ...body);
  const rollbacks = pick(s, 'visionq_model_rollbacks_total').filter((x) => x.value > 0)
    .map((x) => `${x.labels.model}: ${fmt(x.value, 0)} × ${x.labels.reason}`);
  $('models-note').textContent = rows.length
    ? `Latency: receipt to result, by the model version that answered (both versions of a canary). ${rollbacks.length ? `Candidates rolled back automatically — ${rollbacks.join(', ')}.` : 'No candidate rolled back automatically.'}`
    : 'No infer-worker metrics here yet (distributed mode: dashboard_metrics_urls).';
}
