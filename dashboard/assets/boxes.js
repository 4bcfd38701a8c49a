// Detections drawn over a frame, coloured by confidence band: shared by the
// dashboard (frame.js) and the station page (station.js). `t` is the page's
// configuration: { accept_threshold, low_threshold }.

export function confClass(score, t) {
  if (score >= t.accept_threshold) return 'conf-ok';
  if (score >= t.low_threshold) return 'conf-mid';
  return 'conf-low';
}

// A score as its label shows it: two decimals, or as many more as it takes for the
// label not to read as the other side of a threshold (0.8488 reads "0.849", not
// "0.85", when 0.85 is the accept threshold), so label and colour always agree.
export function scoreText(score, t) {
  const { accept_threshold: accept, low_threshold: low } = t;
  for (let digits = 2; digits <= 6; digits++) {
    const shown = Number(score.toFixed(digits));
    if ((shown >= accept) === (score >= accept) && (shown >= low) === (score >= low)) return score.toFixed(digits);
  }
  return String(score);
}

// What a model chain (issue 22) added to a detection, as drawn beside its box: the
// text read ("“…”" and its score) and/or the second classifier's label and score;
// '' when no chain took it.
export function chainText(d) {
  const parts = [];
  if (d.text) parts.push(`“${d.text.value}” ${d.text.score.toFixed(2)}`);
  if (d.classification) parts.push(`${d.classification.label} ${d.classification.score.toFixed(2)}`);
  return parts.join(' · ');
}

// Replaces what `layer` (absolutely positioned over the picture) shows with one
// `.box` per detection, placed in percent of the picture (boxes are normalised).
export function drawBoxes(layer, detections, t) {
  layer.textContent = '';
  for (const d of detections || []) {
    const [x1, y1, x2, y2] = d.box;
    const b = document.createElement('div');
    b.className = `box ${confClass(d.score, t)}`;
    b.style.left = `${(x1 * 100).toFixed(3)}%`;
    b.style.top = `${(y1 * 100).toFixed(3)}%`;
    b.style.width = `${((x2 - x1) * 100).toFixed(3)}%`;
    b.style.height = `${((y2 - y1) * 100).toFixed(3)}%`;
    if (y1 < 0.06) b.classList.add('label-inside');
    if (x1 > 0.6) b.classList.add('label-right');
    b.dataset.class = d.class_name;
    b.dataset.score = String(d.score);
    const label = document.createElement('span');
    label.className = 'label';
    label.textContent = `${d.class_name} ${scoreText(d.score, t)}`;
    b.append(label);
    const chained = chainText(d);
    if (chained) {
      const second = document.createElement('span');
      second.className = 'chain';
      second.textContent = chained;
      b.dataset.chain = chained;
      b.append(second);
    }
    b.title = [label.textContent, chained].filter(Boolean).join(' · ');
    layer.append(b);
  }
}
