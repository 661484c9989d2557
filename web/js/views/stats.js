// Stats: cards updated live from `job-stats`, and the last 7 days as a chart and a table.

import { api } from '../api.js';
import { el, notice, replace, setNotice, setText } from '../dom.js';
import { formatCount, formatDuration, formatPercent, formatTime } from '../format.js';
import { on } from '../state.js';
import { request } from '../socket.js';
import { dailyChart } from './chart.js';

const DAILY_REFRESH_MS = 5000;

/** The stat cards; returns {root, update(stats)}. Shared with the wallboard's look. */
export function statCards() {
  const cards = {
    running: el('strong', { class: 'value', id: 'stat-running', text: '–' }),
    today: el('strong', { class: 'value', id: 'stat-today', text: '–' }),
    todaySuccess: el('strong', { class: 'value', id: 'stat-today-success', text: '–' }),
    todayFailed: el('strong', { class: 'value', id: 'stat-today-failed', text: '–' }),
    rate: el('strong', { class: 'value', id: 'stat-success-rate', text: '–' }),
    avg: el('strong', { class: 'value', id: 'stat-avg-duration', text: '–' }),
  };
  const card = (label, value, extra = '') => el('div', { class: `stat-card ${extra}` },
    el('span', { class: 'label', text: label }), value);
  const scope = el('p', { class: 'hint', id: 'stat-scope' });
  const root = el('div', {},
    el('div', { class: 'cards' },
      card('Running now', cards.running, 'running'),
      card('Started today', cards.today),
      card('Succeeded today', cards.todaySuccess, 'good'),
      card('Failed today', cards.todayFailed, 'bad'),
      card('Success rate', cards.rate),
      card('Average processing time', cards.avg)),
    scope);
  return {
    root,
    update(stats) {
      if (!stats || !stats.counts) return;
      setText(cards.running, formatCount(stats.running));
      setText(cards.today, formatCount(stats.today?.total));
      setText(cards.todaySuccess, formatCount(stats.today?.success));
      setText(cards.todayFailed, formatCount(stats.today?.failed));
      setText(cards.rate, formatPercent(stats.success_rate));
      setText(cards.avg, stats.avg_duration_ms === null ? '–' : formatDuration(stats.avg_duration_ms));
      setText(scope, `${stats.user_id === null ? 'All users' : 'Your jobs'} · as of ${formatTime(stats.as_of)}`);
    },
  };
}

export function mount(root) {
  const status = notice('info');
  const cards = statCards();
  const chartNode = el('div', { class: 'chart', id: 'daily-chart', role: 'img',
    'aria-label': 'Jobs per day for the last 7 days, by outcome' });
  const tbody = el('tbody');
  replace(root,
    el('div', { class: 'page-head' }, el('h1', { text: 'Stats' })),
    status,
    cards.root,
    el('section', { class: 'card' }, el('h2', { text: 'Your jobs, last 7 days (UTC)' }), chartNode,
      el('div', { class: 'table-wrap' }, el('table', { class: 'data compact', id: 'daily-table' },
        el('thead', {}, el('tr', {}, ['Day', 'Started', 'Succeeded', 'Partial', 'Failed', 'Cancelled', 'Average time']
          .map((name) => el('th', { scope: 'col', text: name, class: name === 'Day' ? null : 'num' })))),
        tbody))));

  let chart = null;
  let alive = true;
  let lastDaily = 0;
  let dailyTimer = 0;

  function renderDaily(daily) {
    replace(tbody, daily.map((d) => el('tr', {}, el('td', { text: d.day }),
      ...['created', 'success', 'partial', 'failed', 'cancelled'].map((k) => el('td', { class: 'num', text: formatCount(d[k]) })),
      el('td', { class: 'num', text: d.avg_duration_ms === null ? '' : formatDuration(d.avg_duration_ms) }))));
    if (chart) chart.update(daily);
    else chart = dailyChart(chartNode, daily);
  }

  async function load() {
    lastDaily = Date.now();
    try {
      const stats = await api('/api/stats/mine');
      if (!alive) return;
      setNotice(status, '');
      if (!cards.root.dataset.live) cards.update(stats);
      renderDaily(stats.daily || []);
    } catch (error) {
      if (alive) setNotice(status, `Could not load stats: ${error.message}`, 'error');
    }
  }

  // the daily figures change with jobs too: refetched after stats events, at most every few seconds
  function refreshDailySoon() {
    if (dailyTimer) return;
    dailyTimer = setTimeout(() => { dailyTimer = 0; if (alive) load(); },
      Math.max(0, DAILY_REFRESH_MS - (Date.now() - lastDaily)));
  }

  const stops = [
    on('stats', (stats) => {
      cards.root.dataset.live = '1';
      cards.update(stats);
      refreshDailySoon();
    }),
  ];
  request('get-stats').then((stats) => { if (alive) { cards.root.dataset.live = '1'; cards.update(stats); } })
    .catch(() => {});
  load();
  return () => {
    alive = false;
    clearTimeout(dailyTimer);
    stops.forEach((stop) => stop());
    if (chart) chart.destroy();
  };
}
