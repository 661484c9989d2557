// Scoped views: Customer Status and App Status of exactly one job's customers, chosen from a
// dropdown of the user's jobs; cache hits/misses, refresh, bypass cache, live appstatus-update.

import { api, query } from '../api.js';
import { el, notice, replace, setNotice, setText } from '../dom.js';
import { formatCount, formatPercent, formatTime, shortId } from '../format.js';
import { on } from '../state.js';
import { request, subscribeJob, unsubscribeJob } from '../socket.js';
import { notAvailable, plainBadge } from './widgets.js';

const TABS = [
  { id: 'customers', label: 'Customer Status' },
  { id: 'apps', label: 'App Status' },
];

export function mount(root, { match, params }) {
  const tab = match[1] || 'customers';
  const jobId = params.get('job') || '';
  let alive = true;
  const stops = [];

  const select = el('select', { id: 'scope-job' }, el('option', { value: '', text: 'Choose a job…' }));
  const tabs = el('nav', { class: 'tabs', 'aria-label': 'Scoped views' }, TABS.map((t) => el('a', {
    href: `#/scope/${t.id}${query({ job: jobId })}`, class: 'tab', id: `tab-${t.id}`,
    'aria-current': t.id === tab ? 'page' : null, text: t.label })));
  const status = notice('info');
  const panel = el('section', { class: 'card', id: `scope-${tab}` });
  replace(root,
    el('div', { class: 'page-head' }, el('h1', { text: 'Scoped views' })),
    el('div', { class: 'scope-bar' },
      el('div', { class: 'field inline grow' }, el('label', { for: select.id, text: 'Scope (job)' }), select), tabs),
    status, panel);

  select.addEventListener('change', () => {
    location.hash = `#/scope/${tab}${query({ job: select.value })}`;
  });

  api('/api/jobs/mine?limit=100').then((page) => {
    if (!alive) return;
    const options = page.jobs.map((job) => el('option', { value: job.job_id, selected: job.job_id === jobId,
      text: `${shortId(job.job_id)} · ${job.action_name} · ${formatCount(job.customer_count)} customers · `
        + `${job.status} · ${formatTime(job.created_at)}` }));
    if (jobId && !page.jobs.some((job) => job.job_id === jobId)) {
      options.unshift(el('option', { value: jobId, selected: true, text: jobId }));
    }
    select.append(...options);
  }).catch((error) => setNotice(status, `Could not list your jobs: ${error.message}`, 'error'));

  if (!jobId) {
    replace(panel, el('p', { class: 'empty', text: 'Choose one of your jobs to see exactly its customers.' }));
  } else if (tab === 'customers') {
    customerStatus(panel, jobId, status, () => alive);
  } else {
    stops.push(...appStatus(panel, jobId, status, () => alive));
  }
  return () => {
    alive = false;
    stops.forEach((stop) => stop());
  };
}

function scopeError(status, error, what) {
  if (error.status === 403) setNotice(status, 'This job belongs to another user.', 'error');
  else if (error.status === 404 && error.code === 'not_found' && /job/i.test(error.message)) {
    setNotice(status, 'There is no such job.', 'error');
  } else setNotice(status, `Could not load ${what}: ${error.message}`, 'error');
}

function customerStatus(panel, jobId, status, isAlive) {
  const summary = el('p', { class: 'summary', id: 'actions-summary' });
  const tbody = el('tbody');
  const refresh = el('button', { type: 'button', class: 'btn', id: 'actions-refresh', text: 'Refresh' });
  replace(panel,
    el('div', { class: 'section-head' }, el('h2', { text: 'Customer Status' }), refresh),
    summary,
    el('div', { class: 'table-wrap' }, el('table', { class: 'data', id: 'actions-table' },
      el('caption', { class: 'sr-only', text: "The cluster's state of this job's customers" }),
      el('thead', {}, el('tr', {}, ['CID', 'Cluster state', 'Last action', 'Updated on the cluster', 'Job result']
        .map((name) => el('th', { scope: 'col', text: name })))),
      tbody)));

  async function load() {
    refresh.disabled = true;
    setText(summary, 'Loading…');
    try {
      const answer = await api(`/api/jobs/${encodeURIComponent(jobId)}/actions`);
      if (!isAlive()) return;
      setNotice(status, '');
      setText(summary, `${formatCount(answer.customer_count)} customers: ${formatCount(answer.known)} known to `
        + `cluster ${answer.cluster}, ${formatCount(answer.unknown)} unknown · read ${answer.pages_read} page(s) `
        + `· as of ${formatTime(answer.as_of)}`);
      replace(tbody, answer.customers.map((c) => {
        const result = c.job_result || {};
        return el('tr', { dataset: { cid: c.cid } },
          el('td', { class: 'mono', text: c.cid }),
          el('td', {}, c.known ? el('span', { class: 'state', text: c.state || '' })
            : el('span', { class: 'badge badge-unknown', text: 'Unknown to the cluster' })),
          el('td', { text: c.last_action || '' }),
          el('td', { text: formatTime(c.updated_at) }),
          el('td', {}, plainBadge(result.status || 'PENDING'),
            result.http_status ? ` HTTP ${result.http_status}` : '',
            result.error_message ? el('span', { class: 'error-text', text: ` ${result.error_message}` }) : ''));
      }));
    } catch (error) {
      if (!isAlive()) return;
      setText(summary, '');
      if (error.status === 404 && error.code === 'not_found' && !/job/i.test(error.message)) {
        replace(tbody);
        panel.append(notAvailable('Customer Status'));
      } else scopeError(status, error, 'customer states');
    } finally {
      refresh.disabled = false;
    }
  }
  refresh.addEventListener('click', load);
  load();
}

function appStatus(panel, jobId, status, isAlive) {
  const hits = el('strong', { id: 'appstatus-hits', text: '–' });
  const misses = el('strong', { id: 'appstatus-misses', text: '–' });
  const failedNote = el('span', { class: 'error-text', id: 'appstatus-failed' });
  const source = el('span', { class: 'hint', id: 'appstatus-source' });
  const refresh = el('button', { type: 'button', class: 'btn', id: 'appstatus-refresh', text: 'Refresh' });
  const bypass = el('button', { type: 'button', class: 'btn', id: 'appstatus-bypass', text: 'Bypass cache' });
  const keepFresh = el('input', { type: 'checkbox', id: 'appstatus-watch' });
  const cacheStats = el('p', { class: 'summary', id: 'cache-stats' });
  const tbody = el('tbody');
  const rows = new Map(); // cid -> row cells
  replace(panel,
    el('div', { class: 'section-head' }, el('h2', { text: 'App Status' }),
      el('div', { class: 'actions' }, refresh, bypass,
        el('label', { class: 'check', for: keepFresh.id }, keepFresh, ' Keep fresh while open'))),
    el('p', { class: 'summary' }, 'Cache hits ', hits, ' · misses ', misses, ' ', failedNote, ' ', source),
    cacheStats,
    el('div', { class: 'table-wrap' }, el('table', { class: 'data', id: 'appstatus-table' },
      el('caption', { class: 'sr-only', text: "App status of this job's customers" }),
      el('thead', {}, el('tr', {}, ['CID', 'App', 'Status', 'Detail', 'From cache', 'Cached at']
        .map((name) => el('th', { scope: 'col', text: name })))),
      tbody)));

  function render(answer, how) {
    setText(hits, formatCount(answer.cache_hits));
    setText(misses, formatCount(answer.cache_misses));
    const failed = answer.failed_cids || [];
    setText(failedNote, failed.length ? `· ${formatCount(failed.length)} could not be fetched` : '');
    setText(source, `${how} at ${formatTime(new Date().toISOString())}`);
    const statuses = answer.appstatus || answer.statuses || {};
    const fresh = !rows.size;
    const fragment = document.createDocumentFragment();
    for (const [cid, entry] of Object.entries(statuses)) {
      let row = rows.get(cid);
      if (!row) {
        row = { tr: el('tr', { dataset: { cid } }), cells: [0, 1, 2, 3, 4, 5].map(() => el('td')) };
        row.cells[0].className = 'mono';
        row.tr.append(...row.cells);
        rows.set(cid, row);
        fragment.append(row.tr);
      }
      const value = entry || {};
      setText(row.cells[0], cid);
      setText(row.cells[1], value.app || answer.app || '');
      replace(row.cells[2], value.status ? plainBadge(`app-${value.status}`, value.status)
        : el('span', { class: 'badge badge-unknown', text: 'not fetched' }));
      setText(row.cells[3], value.error || value.detail || '');
      setText(row.cells[4], value.from_cache ? 'yes' : 'no');
      setText(row.cells[5], formatTime(value.cached_at, { alwaysDate: false }));
      row.tr.dataset.fromCache = String(Boolean(value.from_cache));
    }
    if (fresh) tbody.replaceChildren(fragment);
    else tbody.append(fragment);
  }

  async function loadCacheStats() {
    try {
      const stats = await api('/api/cache/stats');
      if (!isAlive()) return;
      const t = stats.total || {};
      const rate = t.hit_rate === null || t.hit_rate === undefined ? null : t.hit_rate * 100; // a 0-1 ratio
      setText(cacheStats, `Cache (${stats.scope === 'all' ? 'all users' : 'your jobs'}): `
        + `${formatCount(t.entries)} entries, ${formatCount(t.hits)} hits, ${formatCount(t.misses)} misses, `
        + `hit rate ${formatPercent(rate)}`);
    } catch (error) {
      setText(cacheStats, error.status === 404 ? 'Cache statistics are not available on this server yet.' : '');
    }
  }

  async function load(skipCache) {
    refresh.disabled = true;
    bypass.disabled = true;
    try {
      const answer = await api(`/api/jobs/${encodeURIComponent(jobId)}/appstatus${query({
        app: 'ALL', skip_cache: skipCache ? 'true' : '' })}`);
      if (!isAlive()) return;
      setNotice(status, '');
      render(answer, skipCache ? 'Fetched from the cluster (cache bypassed)' : 'Loaded');
      loadCacheStats();
    } catch (error) {
      if (!isAlive()) return;
      if (error.status === 404 && error.code === 'not_found' && !/job/i.test(error.message)) {
        replace(tbody);
        panel.append(notAvailable('App Status'));
      } else scopeError(status, error, 'app status');
    } finally {
      refresh.disabled = false;
      bypass.disabled = false;
    }
  }

  async function setWatch() {
    try {
      const ack = await request(keepFresh.checked ? 'watch-appstatus' : 'unwatch-appstatus',
        { job_id: jobId, app: 'ALL' });
      if (ack && ack.error) throw new Error(ack.error.message);
    } catch (error) {
      keepFresh.checked = false;
      setNotice(status, `Cannot keep this job fresh: ${error.message}`, 'warning');
    }
  }

  refresh.addEventListener('click', () => load(false));
  bypass.addEventListener('click', () => load(true));
  keepFresh.addEventListener('change', setWatch);
  subscribeJob(jobId).then((ack) => {
    if (ack && ack.error) setNotice(status, `Live updates refused: ${ack.error.message}`, 'warning');
  }).catch(() => {});
  load(false);
  return [
    on('appstatus', (update) => {
      if (!update || update.job_id !== jobId) return;
      render(update, 'Live update');
    }),
    on('reconnected', () => { if (keepFresh.checked) setWatch(); }),
    () => unsubscribeJob(jobId),
  ];
}
