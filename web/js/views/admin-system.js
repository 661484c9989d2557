// Admin → System: every node's own figures (CPU, memory, event-loop lag, sockets, running jobs,
// fan-out queue, upstream calls in flight, database pool), from GET /admin/system, polled while the
// section is open so it stays live; a node that stopped reporting shows as gone, with when it was last seen.

import { api } from '../api.js';
import { el, notice, replace, setNotice, setText } from '../dom.js';
import { formatCount, formatTime } from '../format.js';

const MIN_POLL_MS = 1000;
const MAX_POLL_MS = 10_000;

/** Bytes as "812 MB", "1.2 GB". */
export function formatBytes(bytes) {
  if (bytes === null || bytes === undefined) return '–';
  if (bytes < 1024 * 1024) return `${Math.round(bytes / 1024)} KB`;
  if (bytes < 1024 ** 3) return `${Math.round(bytes / 1024 ** 2)} MB`;
  return `${(bytes / 1024 ** 3).toFixed(1)} GB`;
}

function number(value, unit, digits = 1) {
  return value === null || value === undefined ? '–' : `${Number(value).toFixed(digits)} ${unit}`;
}

function lag(ms) {
  return number(ms, 'ms', ms !== null && ms !== undefined && ms < 1 ? 2 : 1); // an idle loop: hundredths of a ms
}

function pool(node) {
  const max = node.db_pool_max === null || node.db_pool_max === undefined ? '' : ` / ${node.db_pool_max}`;
  return `${formatCount(node.db_pool_in_use)} in use${max} · ${formatCount(node.db_pool_idle)} idle`;
}

const COLUMNS = [
  ['Node', null], ['State', null], ['CPU', 'num'], ['Memory', 'num'], ['Loop lag (max / avg)', 'num'],
  ['Sockets', 'num'], ['Jobs running', 'num'], ['Fan-out queue', 'num'], ['Upstream calls', 'num'],
  ['Database pool', 'num'], ['Last seen', null],
];

function nodeRow(node) {
  const state = node.state === 'live'
    ? el('span', { class: 'badge badge-success node-state', text: 'live' })
    : el('span', { class: 'badge badge-cancelled node-state', text: 'gone' });
  const lastSeen = node.state === 'live' ? formatTime(node.last_seen)
    : `${formatTime(node.last_seen, { alwaysDate: true })} (${formatCount(Math.round(node.seconds_since_report))} s ago)`;
  return el('tr', { class: node.state === 'live' ? 'node-live' : 'node-gone', dataset: { nodeId: node.node_id, state: node.state } },
    el('td', {}, el('span', { class: 'mono', text: node.node_id }), node.this_node ? el('span', { class: 'hint', text: ' (this node)' }) : null),
    el('td', {}, state),
    el('td', { class: 'num', text: number(node.cpu_percent, '%') }),
    el('td', { class: 'num', text: formatBytes(node.rss_bytes) }),
    el('td', { class: 'num', text: node.loop_lag_ms === null || node.loop_lag_ms === undefined ? '–'
      : `${lag(node.loop_lag_ms)} / ${lag(node.loop_lag_avg_ms)}` }),
    el('td', { class: 'num', text: formatCount(node.sockets) }),
    el('td', { class: 'num', text: formatCount(node.jobs_running) }),
    el('td', { class: 'num', text: formatCount(node.fanout_queue) }),
    el('td', { class: 'num', text: formatCount(node.upstream_in_flight) }),
    el('td', { class: 'num', text: pool(node) }),
    el('td', { text: lastSeen }));
}

/** Mount the System section into `body`; returns the function that stops its polling. */
export function adminSystem(body) {
  const status = notice('info');
  const summary = el('p', { class: 'summary', id: 'admin-system-summary', 'aria-live': 'polite' });
  const tbody = el('tbody');
  replace(body, status,
    el('section', { class: 'card' }, el('h2', { text: 'Nodes' }), summary,
      el('div', { class: 'table-wrap' }, el('table', { class: 'data compact', id: 'admin-nodes' },
        el('thead', {}, el('tr', {}, COLUMNS.map(([label, cls]) => el('th', { scope: 'col', text: label, class: cls })))),
        tbody))));

  let timer = null;
  let stopped = false;
  let pollMs = 5000;
  async function load() {
    try {
      const answer = await api('/admin/system');
      if (stopped) return;
      pollMs = Math.min(MAX_POLL_MS, Math.max(MIN_POLL_MS, answer.interval_seconds * 1000));
      replace(tbody, answer.nodes.length ? answer.nodes.map(nodeRow)
        : el('tr', {}, el('td', { colspan: COLUMNS.length, text: 'No node has reported yet.' })));
      setText(summary, `${formatCount(answer.live)} live · ${formatCount(answer.gone)} gone · updated ${formatTime(answer.as_of)}`);
      summary.dataset.state = 'live';
      setNotice(status, '');
    } catch (error) {
      if (stopped) return;
      summary.dataset.state = 'stale';
      setNotice(status, `Could not refresh the node figures: ${error.message}. Trying again.`, 'error');
    }
    if (!stopped) timer = setTimeout(load, pollMs);
  }
  load();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}
