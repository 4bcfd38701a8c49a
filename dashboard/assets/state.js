// The dashboard's shared mutable state, in one place: the page's configuration,
// the stations shown, the live connection, the open detail panel; and the review
// queue's items (review.js keeps them, app.js clears them when the station changes).

export const state = {
  config: { accept_threshold: 0.85, low_threshold: 0.65, stale_after_ms: 10000, metrics_sources: [{ name: 'this process', url: '/metrics' }] },
  stations: new Map(), // name -> { summary, result (shown frame's result), shownId, tile, loading }
  offsetMs: 0,         // server clock - browser clock
  ws: null,
  attempt: 0,
  retryAt: 0,
  retryTimer: null,
  lastMessageAt: 0,
  filter: '',
  detail: null,        // station name shown in the detail panel
  frameRates: [],      // [{t, frames}] for the header's frames/s
};

export const review = { items: new Map(), timer: null };
