// Unit tests of boxes.js's text for a model chain's output (issue 22). Run by
// scripts/test: node --test dashboard/assets/tests/*.test.mjs.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { chainText } from '../boxes.js';

test('a detection no chain took has no chain text', () => {
  assert.equal(chainText({ class_name: 'bus', score: 0.9 }), '');
});

test('text read and a classifier label are shown with their scores', () => {
  const d = {
    class_name: 'bus',
    score: 0.9,
    text: { value: 'VQ2026-0417', score: 0.987, model: 'sign' },
    classification: { label: '180', score: 0.5, top_k: [], model: 'orientation' },
  };
  assert.equal(chainText(d), '“VQ2026-0417” 0.99 · 180 0.50');
  assert.equal(chainText({ classification: d.classification }), '180 0.50');
});
