// Prometheus text and the queries the pipeline view makes of it: parse the exposition
// format, merge several processes' samples, select and sum series, histogram buckets
// and quantiles, a counter's rate between two scrapes. Pure functions: no DOM, no fetch.

export function parseProm(text) {
  const out = [];
  for (const line of text.split('\n')) {
    if (!line || line[0] === '#') continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const labels = {};
    if (m[2]) {
      const re = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;
      let l;
      while ((l = re.exec(m[2]))) labels[l[1]] = l[2].replace(/\\(.)/g, (_, c) => (c === 'n' ? '\n' : c));
    }
    const raw = m[3];
    const value = raw === '+Inf' ? Infinity : raw === '-Inf' ? -Infinity : parseFloat(raw);
    out.push({ name: m[1], labels, value });
  }
  return out;
}

// Several processes' samples as one: counters and histograms add up; a queue's depth
// is the same queue seen from each process, so the largest reading wins.
export function mergeSamples(lists) {
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

export function pick(samples, name, where) {
  return samples.filter((s) => s.name === name && Object.entries(where || {}).every(([k, v]) => s.labels[k] === v));
}
export function total(samples, name, where) {
  return pick(samples, name, where).reduce((a, s) => a + s.value, 0);
}

// Cumulative buckets of a histogram (optionally one label value), sorted by bound.
export function buckets(samples, name, where) {
  const m = new Map();
  for (const s of pick(samples, `${name}_bucket`, where)) {
    const le = s.labels.le === '+Inf' ? Infinity : parseFloat(s.labels.le);
    m.set(le, (m.get(le) || 0) + s.value);
  }
  return [...m.entries()].sort((a, b) => a[0] - b[0]).map(([le, count]) => ({ le, count }));
}

export function subtractBuckets(now, before) {
  if (!before) return now;
  return now.map((b) => {
    const p = before.find((x) => x.le === b.le);
    return { le: b.le, count: Math.max(0, b.count - (p ? p.count : 0)) };
  });
}

// histogram_quantile: linear interpolation inside the bucket holding the quantile.
export function quantile(q, bs) {
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

export function rate(now, prev, name, where) {
  if (!prev) return NaN;
  const dt = (now.t - prev.t) / 1000;
  const a = total(now.samples, name, where);
  const b = total(prev.samples, name, where);
  // A restarted process starts its counters again.
  const d = a >= b ? a - b : a;
  return dt > 0 ? d / dt : NaN;
}
