// Unit tests of prom.js, the Prometheus text parser and query engine of the pipeline
// view. Run by scripts/test: node --test dashboard/assets/tests/*.test.mjs
// (node's own runner, no packages). Not an asset: dashboard/src/assets.rs serves only
// the files it names.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { parseProm, mergeSamples, pick, total, buckets, subtractBuckets, quantile, rate } from '../prom.js';

// What the results role's /metrics looks like (abridged): comments, a counter with
// labels, a histogram, gauges, a value with a timestamp, special values.
const EXPOSITION = `# HELP visionq_stage_frames_total Frames each stage finished, by outcome.
# TYPE visionq_stage_frames_total counter
visionq_stage_frames_total{stage="preprocess",outcome="ok"} 1027
visionq_stage_frames_total{stage="infer",outcome="ok"} 1020
visionq_stage_frames_total{stage="infer",outcome="error"} 7

# HELP visionq_stage_duration_seconds Time in each stage.
# TYPE visionq_stage_duration_seconds histogram
visionq_stage_duration_seconds_bucket{stage="end_to_end",le="0.025"} 3
visionq_stage_duration_seconds_bucket{stage="end_to_end",le="0.05"} 120
visionq_stage_duration_seconds_bucket{stage="end_to_end",le="0.1"} 900
visionq_stage_duration_seconds_bucket{stage="end_to_end",le="+Inf"} 1020
visionq_stage_duration_seconds_sum{stage="end_to_end"} 71.25
visionq_stage_duration_seconds_count{stage="end_to_end"} 1020
# TYPE visionq_queue_depth gauge
visionq_queue_depth{queue="visionq.frames"} 12
visionq_model_info{name="yolov3-tiny",version="1.2"} 1
process_start_time_seconds 1.7681e+09
visionq_dead_lettered_total{queue="visionq.frames",reason="expired"} 4 1768471200000
visionq_temperature_celsius NaN
visionq_headroom +Inf 1768471200000
visionq_floor -Inf
`;

test('parses every sample of an exposition: names, labels, values; skips comments and blank lines', () => {
  const samples = parseProm(EXPOSITION);
  assert.deepEqual(samples, [
    { name: 'visionq_stage_frames_total', labels: { stage: 'preprocess', outcome: 'ok' }, value: 1027 },
    { name: 'visionq_stage_frames_total', labels: { stage: 'infer', outcome: 'ok' }, value: 1020 },
    { name: 'visionq_stage_frames_total', labels: { stage: 'infer', outcome: 'error' }, value: 7 },
    { name: 'visionq_stage_duration_seconds_bucket', labels: { stage: 'end_to_end', le: '0.025' }, value: 3 },
    { name: 'visionq_stage_duration_seconds_bucket', labels: { stage: 'end_to_end', le: '0.05' }, value: 120 },
    { name: 'visionq_stage_duration_seconds_bucket', labels: { stage: 'end_to_end', le: '0.1' }, value: 900 },
    { name: 'visionq_stage_duration_seconds_bucket', labels: { stage: 'end_to_end', le: '+Inf' }, value: 1020 },
    { name: 'visionq_stage_duration_seconds_sum', labels: { stage: 'end_to_end' }, value: 71.25 },
    { name: 'visionq_stage_duration_seconds_count', labels: { stage: 'end_to_end' }, value: 1020 },
    { name: 'visionq_queue_depth', labels: { queue: 'visionq.frames' }, value: 12 },
    { name: 'visionq_model_info', labels: { name: 'yolov3-tiny', version: '1.2' }, value: 1 },
    { name: 'process_start_time_seconds', labels: {}, value: 1768100000 },
    // A timestamp after the value is not part of it.
    { name: 'visionq_dead_lettered_total', labels: { queue: 'visionq.frames', reason: 'expired' }, value: 4 },
    { name: 'visionq_temperature_celsius', labels: {}, value: NaN },
    { name: 'visionq_headroom', labels: {}, value: Infinity },
    { name: 'visionq_floor', labels: {}, value: -Infinity },
  ]);
});

test('unescapes label values: quotes, backslashes, newlines; commas and braces inside quotes', () => {
  const text = [
    'visionq_ingest_rejected_total{reason="body \\"too\\" large",path="C:\\\\frames\\\\in"} 2',
    'visionq_ingest_rejected_total{reason="line one\\nline two"} 3',
    'visionq_ingest_rejected_total{reason="a backslash then n: x\\\\ny"} 4',
    'visionq_events_total{sink="mqtt://broker:1883/a,b",topic="{station}/result"} 5',
    'job:visionq_frames:rate5m{job="results"} 0.5',
  ].join('\n');
  assert.deepEqual(parseProm(text), [
    { name: 'visionq_ingest_rejected_total', labels: { reason: 'body "too" large', path: 'C:\\frames\\in' }, value: 2 },
    { name: 'visionq_ingest_rejected_total', labels: { reason: 'line one\nline two' }, value: 3 },
    { name: 'visionq_ingest_rejected_total', labels: { reason: 'a backslash then n: x\\ny' }, value: 4 },
    { name: 'visionq_events_total', labels: { sink: 'mqtt://broker:1883/a,b', topic: '{station}/result' }, value: 5 },
    { name: 'job:visionq_frames:rate5m', labels: { job: 'results' }, value: 0.5 },
  ]);
});

test('skips lines that are not samples', () => {
  assert.deepEqual(parseProm('\n# EOF\n{le="1"} 3\n9metric 1\nvisionq_up\n'), []);
});

test('merges processes: counters and histogram buckets add up, a queue depth takes the largest reading', () => {
  const ingest = parseProm('visionq_stage_frames_total{stage="infer",outcome="ok"} 10\nvisionq_queue_depth{queue="visionq.frames"} 40\nvisionq_ingest_accepted_total 100\n');
  // The same series with its labels in another order is the same series.
  const infer = parseProm('visionq_stage_frames_total{outcome="ok",stage="infer"} 32\nvisionq_queue_depth{queue="visionq.frames"} 38\nvisionq_queue_depth{queue="visionq.tensors"} 5\n');
  const merged = mergeSamples([ingest, infer]);
  assert.deepEqual(merged, [
    { name: 'visionq_stage_frames_total', labels: { stage: 'infer', outcome: 'ok' }, value: 42 },
    { name: 'visionq_queue_depth', labels: { queue: 'visionq.frames' }, value: 40 },
    { name: 'visionq_ingest_accepted_total', labels: {}, value: 100 },
    { name: 'visionq_queue_depth', labels: { queue: 'visionq.tensors' }, value: 5 },
  ]);
  // The inputs are left as they were (the previous scrape is kept for rates).
  assert.equal(ingest[0].value, 10);
  assert.equal(ingest[1].value, 40);
});

test('picks series by name and labels, and sums them', () => {
  const s = parseProm(EXPOSITION);
  assert.deepEqual(pick(s, 'visionq_stage_frames_total', { stage: 'infer' }).map((x) => x.value), [1020, 7]);
  assert.equal(total(s, 'visionq_stage_frames_total'), 2054);
  assert.equal(total(s, 'visionq_stage_frames_total', { stage: 'infer', outcome: 'ok' }), 1020);
  assert.equal(total(s, 'visionq_stage_frames_total', { stage: 'decode' }), 0);
  assert.equal(total(s, 'visionq_no_such_metric'), 0);
});

test('reads a histogram\'s cumulative buckets in bound order, +Inf last, summed over other labels', () => {
  const text = [
    'visionq_infer_batch_size_bucket{model="a",le="+Inf"} 20',
    'visionq_infer_batch_size_bucket{model="a",le="16"} 20',
    'visionq_infer_batch_size_bucket{model="a",le="2"} 12',
    'visionq_infer_batch_size_bucket{model="a",le="4"} 15',
    'visionq_infer_batch_size_bucket{model="b",le="2"} 1',
    'visionq_infer_batch_size_bucket{model="b",le="4"} 3',
    'visionq_infer_batch_size_bucket{model="b",le="16"} 3',
    'visionq_infer_batch_size_bucket{model="b",le="+Inf"} 3',
    'visionq_infer_batch_size_sum{model="a"} 70',
  ].join('\n');
  const s = parseProm(text);
  // Bounds sort as numbers (16 after 4), not as text.
  assert.deepEqual(buckets(s, 'visionq_infer_batch_size'), [
    { le: 2, count: 13 }, { le: 4, count: 18 }, { le: 16, count: 23 }, { le: Infinity, count: 23 },
  ]);
  assert.deepEqual(buckets(s, 'visionq_infer_batch_size', { model: 'b' }), [
    { le: 2, count: 1 }, { le: 4, count: 3 }, { le: 16, count: 3 }, { le: Infinity, count: 3 },
  ]);
  assert.deepEqual(buckets(s, 'visionq_no_such_histogram'), []);
});

test('quantiles interpolate linearly inside the bucket that holds them', () => {
  const bs = [{ le: 0.25, count: 16 }, { le: 0.5, count: 48 }, { le: 1, count: 64 }, { le: Infinity, count: 64 }];
  assert.equal(quantile(0.25, bs), 0.25);
  assert.equal(quantile(0.5, bs), 0.375);
  assert.equal(quantile(0.75, bs), 0.5);
  assert.equal(quantile(0.875, bs), 0.75);
  assert.equal(quantile(1, bs), 1);
  // A quantile among the observations above the last bound is that bound, as Prometheus says.
  const tail = [{ le: 0.1, count: 50 }, { le: 0.2, count: 60 }, { le: Infinity, count: 100 }];
  assert.equal(quantile(0.9, tail), 0.2);
  // Nothing observed: no quantile.
  assert.ok(Number.isNaN(quantile(0.5, [])));
  assert.ok(Number.isNaN(quantile(0.5, [{ le: 1, count: 0 }, { le: Infinity, count: 0 }])));
});

// Two scrapes of the same process 2 s apart, as the pipeline view keeps them.
const scrape = (t, frames, e2e) => ({
  t,
  samples: parseProm([
    `visionq_ingest_accepted_total ${frames}`,
    `visionq_ingest_rejected_total{reason="too_large"} 1`,
    ...e2e.map(([le, n]) => `visionq_stage_duration_seconds_bucket{stage="end_to_end",le="${le}"} ${n}`),
  ].join('\n')),
});

test('a counter\'s rate between two scrapes, per second; a restart starts it again', () => {
  const before = scrape(1_000_000, 1000, []);
  const after = scrape(1_002_000, 1130, []);
  assert.equal(rate(after, before, 'visionq_ingest_accepted_total'), 65);
  assert.equal(rate(after, before, 'visionq_ingest_rejected_total', { reason: 'too_large' }), 0);
  // The process restarted in between: its counter starts from 0, so all of it is new.
  const restarted = scrape(1_002_000, 40, []);
  assert.equal(rate(restarted, before, 'visionq_ingest_accepted_total'), 20);
  // No previous scrape, or none earlier: no rate.
  assert.ok(Number.isNaN(rate(after, null, 'visionq_ingest_accepted_total')));
  assert.ok(Number.isNaN(rate(scrape(1_002_000, 1200, []), after, 'visionq_ingest_accepted_total')));
});

test('latency over the last interval: the buckets of two scrapes subtracted, then the quantile', () => {
  const before = scrape(0, 0, [['0.25', 96], ['0.5', 112], ['1', 128], ['+Inf', 128]]);
  const after = scrape(2000, 0, [['0.25', 100], ['0.5', 128], ['1', 160], ['+Inf', 160]]);
  const now = buckets(after.samples, 'visionq_stage_duration_seconds', { stage: 'end_to_end' });
  const prev = buckets(before.samples, 'visionq_stage_duration_seconds', { stage: 'end_to_end' });
  const window = subtractBuckets(now, prev);
  assert.deepEqual(window, [{ le: 0.25, count: 4 }, { le: 0.5, count: 16 }, { le: 1, count: 32 }, { le: Infinity, count: 32 }]);
  // p50 of the last 2 s: rank 16 is the top of the 0.25–0.5 bucket; p75: rank 24, half-way into 0.5–1.
  assert.equal(quantile(0.5, window), 0.5);
  assert.equal(quantile(0.75, window), 0.75);
  // Since start, p50 is rank 80 of 160, four fifths into the first bucket: the recent
  // frames were slower than the rest.
  assert.equal(quantile(0.5, now), 0.2);
  // No earlier scrape: the buckets since start. A bucket missing from it counts from 0;
  // a restart (fewer than before) never gives a negative count.
  assert.equal(subtractBuckets(now, null), now);
  assert.deepEqual(subtractBuckets([{ le: 1, count: 5 }, { le: Infinity, count: 9 }], [{ le: 1, count: 7 }]),
    [{ le: 1, count: 0 }, { le: Infinity, count: 9 }]);
});
