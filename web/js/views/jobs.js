// My jobs: a live table (newest first) with filters, search, keyset pages and CSV export.
// Rows are updated in place from `job-update` events, batched into one DOM pass per frame.

import { api, clustersAndActions, query } from '../api.js';
import { download, el, notice, replace, setNotice, setText } from '../dom.js';
import {
  JOB_STATUSES, fileStamp, formatDuration, formatTime, progressText, shortId, toCsv,
} from '../format.js';
import { knownJob, on, rememberJob, session } from '../state.js';
import { statusWidget, updateStatus } from './widgets.js';

const PAGE_SIZES = [10, 25, 50, 100, 200];
const EXPORT_MAX = 10_000;
const EXPORT_COLUMNS = ['job_id', 'action_name', 'cluster', 'status', 'customer_count', 'done', 'failed',
  'http_status', 'error_message', 'created_at', 'started_at', 'finished_at', 'duration_ms', 'batch_id',
  'parent_job_id'];
const FLUSH_SAMPLES = 5000;
const flushTimes = []; // ms per DOM pass, newest last (read by the browser test's measurement)

/** Durations (ms) of the last DOM update passes, and how many rows each touched. */
export function flushStats() {
  return flushTimes.slice();
}

function readFilters(params) {
  const statuses = (params.get('status') || '').split(',').map((s) => s.trim().toUpperCase())
    .filter((s) => JOB_STATUSES.includes(s));
  const limit = Number(params.get('limit'));
  return {
    statuses,
    action: params.get('action') || '',
    q: (params.get('q') || '').trim().slice(0, 100),
    limit: PAGE_SIZES.includes(limit) ? limit : 50,
  };
}

function filtersHash(filters) {
  return `#/jobs${query({ status: filters.statuses, action: filters.action, q: filters.q,
    limit: filters.limit === 50 ? '' : filters.limit })}`;
}

export function mount(root, { params }) {
  const filters = readFilters(params);
  const cursors = [null]; // cursor of each page visited; the last is the current page
  let nextCursor = null;
  let loadSeq = 0;
  let loadStartedAt = 0;
  const rows = new Map(); // job_id -> {tr, cells, status, key}
  const pending = new Map();
  let frame = 0;

  // -- controls -------------------------------------------------------------------------
  const statusBoxes = JOB_STATUSES.map((status) => {
    const box = el('input', { type: 'checkbox', value: status, id: `filter-status-${status}`,
      checked: filters.statuses.includes(status) });
    return { box, label: el('label', { class: 'check', for: box.id }, box, ` ${status.replace('_', ' ')}`) };
  });
  const actionSelect = el('select', { id: 'filter-action' }, el('option', { value: '', text: 'All actions' }));
  const search = el('input', { type: 'search', id: 'filter-q', value: filters.q, maxlength: 100,
    placeholder: 'Job id (prefix) or exact CID' });
  const sizeSelect = el('select', { id: 'filter-limit' },
    PAGE_SIZES.map((n) => el('option', { value: n, text: `${n} per page`, selected: n === filters.limit })));
  const filterForm = el('form', { class: 'filters', role: 'search', 'aria-label': 'Filter jobs' },
    el('fieldset', { class: 'status-filter' }, el('legend', { text: 'Status' }), statusBoxes.map((s) => s.label)),
    el('div', { class: 'field inline' }, el('label', { for: actionSelect.id, text: 'Action' }), actionSelect),
    el('div', { class: 'field inline grow' }, el('label', { for: search.id, text: 'Search' }), search),
    el('div', { class: 'field inline' }, el('label', { for: sizeSelect.id, text: 'Page size' }), sizeSelect),
    el('button', { type: 'submit', class: 'btn', text: 'Apply' }));

  const status = notice('info');
  const tbody = el('tbody');
  // explicit roles: the rows are laid out as grids (see app.css), which must not drop table semantics
  const table = el('table', { class: 'data jobs-table', id: 'jobs-table', role: 'table',
    'aria-label': 'My jobs, newest first; rows update live' },
  el('thead', { role: 'rowgroup' }, el('tr', { role: 'row' }, ['Job', 'Action', 'Cluster', 'Status', 'Customers', 'Created', 'Duration']
    .map((name) => el('th', { scope: 'col', role: 'columnheader', text: name,
      class: name === 'Customers' || name === 'Duration' ? 'num' : null })))),
  tbody);
  tbody.setAttribute('role', 'rowgroup');
  const newer = el('button', { type: 'button', class: 'btn', id: 'page-newer', text: '← Newer' });
  const older = el('button', { type: 'button', class: 'btn', id: 'page-older', text: 'Older →' });
  const pageLabel = el('span', { class: 'page-label', 'aria-live': 'polite' });
  const exportButton = el('button', { type: 'button', class: 'btn', id: 'export-csv', text: 'Export CSV' });
  const refreshButton = el('button', { type: 'button', class: 'btn btn-quiet', text: 'Refresh' });

  replace(root,
    el('div', { class: 'page-head' }, el('h1', { text: 'My jobs' }),
      el('div', { class: 'actions' }, el('a', { href: '#/new', class: 'btn btn-primary', text: 'New Set Action' }),
        refreshButton, exportButton)),
    filterForm, status,
    el('div', { class: 'table-wrap' }, table),
    el('div', { class: 'pager' }, newer, pageLabel, older));

  clustersAndActions().then(({ actions }) => {
    for (const action of actions) {
      actionSelect.append(el('option', { value: action.name, text: action.name,
        selected: action.name === filters.action }));
    }
  }).catch(() => {});

  function applyFilters() {
    const next = {
      statuses: statusBoxes.filter((s) => s.box.checked).map((s) => s.box.value),
      action: actionSelect.value,
      q: search.value.trim(),
      limit: Number(sizeSelect.value),
    };
    const hash = filtersHash(next);
    if (hash !== location.hash) location.hash = hash; // the router mounts the view again
  }
  filterForm.addEventListener('submit', (event) => { event.preventDefault(); applyFilters(); });
  for (const { box } of statusBoxes) box.addEventListener('change', applyFilters);
  actionSelect.addEventListener('change', applyFilters);
  sizeSelect.addEventListener('change', applyFilters);

  // -- rows -----------------------------------------------------------------------------
  function makeRow(job) {
    const link = el('a', { href: `#/jobs/${encodeURIComponent(job.job_id)}`, class: 'mono',
      title: job.job_id, 'aria-label': `Job ${job.job_id}`, text: shortId(job.job_id) });
    const widget = statusWidget(job);
    const cells = {
      action: el('td', { role: 'cell', text: job.action_name }),
      cluster: el('td', { role: 'cell', text: job.cluster }),
      progress: el('td', { role: 'cell', class: 'num' }),
      created: el('td', { role: 'cell', text: formatTime(job.created_at) }),
      duration: el('td', { role: 'cell', class: 'num' }),
    };
    const tr = el('tr', { role: 'row', dataset: { jobId: job.job_id } }, el('td', { role: 'cell' }, link), cells.action,
      cells.cluster, el('td', { role: 'cell' }, widget.root), cells.progress, cells.created, cells.duration);
    const row = { tr, cells, widget, createdAt: job.created_at };
    fillRow(row, job);
    return row;
  }

  function fillRow(row, job) {
    updateStatus(row.widget, job);
    setText(row.cells.progress, progressText(job));
    setText(row.cells.duration, formatDuration(job.duration_ms));
    row.tr.dataset.status = job.status;
  }

  function matches(job) {
    // admins also receive everyone's job-updates; this table is the user's own jobs
    if (session.user && job.user_id !== session.user.id) return false;
    if (filters.statuses.length && !filters.statuses.includes(job.status)) return false;
    if (filters.action && job.action_name !== filters.action) return false;
    if (filters.q && !job.job_id.startsWith(filters.q.toLowerCase())) return false;
    return true;
  }

  function insertRow(job) {
    // only the first page takes new rows; a job older than this page's last row belongs further on
    if (cursors.length > 1 || !matches(job)) return;
    const last = tbody.lastElementChild;
    const lastRow = last && rows.get(last.dataset.jobId);
    if (nextCursor && lastRow && job.created_at < lastRow.createdAt) return;
    const row = makeRow(job);
    rows.set(job.job_id, row);
    tbody.querySelector('.empty-row')?.remove();
    let before = null;
    const first = tbody.firstElementChild;
    const firstRow = first && rows.get(first.dataset.jobId);
    if (firstRow && firstRow.createdAt <= job.created_at) before = first; // the usual case: a new job
    else for (const tr of tbody.children) {
      const other = rows.get(tr.dataset.jobId);
      if (other && other.createdAt < job.created_at) { before = tr; break; }
    }
    tbody.insertBefore(row.tr, before);
    updatePager();
  }

  function flush() {
    frame = 0;
    const started = performance.now();
    const count = pending.size;
    for (const job of pending.values()) {
      const row = rows.get(job.job_id);
      if (row) fillRow(row, job);
      else insertRow(job);
    }
    pending.clear();
    flushTimes.push({ ms: performance.now() - started, updates: count, rows: rows.size });
    if (flushTimes.length > FLUSH_SAMPLES) flushTimes.splice(0, flushTimes.length - FLUSH_SAMPLES);
  }

  function schedule(job) {
    pending.set(job.job_id, job);
    if (!frame) frame = requestAnimationFrame(flush);
  }

  function renderPage(jobs) {
    rows.clear();
    pending.clear();
    const fragment = document.createDocumentFragment();
    for (const fetched of jobs) {
      rememberJob(fetched);
      const job = knownJob(fetched.job_id) || fetched; // an event may already have brought newer data
      const row = makeRow(job);
      rows.set(job.job_id, row);
      fragment.append(row.tr);
    }
    if (!jobs.length) {
      const filtered = filters.statuses.length || filters.action || filters.q;
      fragment.append(el('tr', { class: 'empty-row', role: 'row' }, el('td', { colspan: 7, role: 'cell' },
        filtered ? 'No job matches these filters.' : 'No jobs yet. ',
        filtered ? null : el('a', { href: '#/new', text: 'Start a Set Action' }))));
    }
    tbody.replaceChildren(fragment);
    updatePager();
  }

  function updatePager() {
    newer.disabled = cursors.length <= 1;
    older.disabled = !nextCursor;
    setText(pageLabel, `Page ${cursors.length} · ${rows.size} job${rows.size === 1 ? '' : 's'}`);
  }

  async function load() {
    const seq = ++loadSeq;
    loadStartedAt = Date.now();
    setNotice(status, '');
    try {
      const page = await api(`/api/jobs/mine${query({ status: filters.statuses, action: filters.action,
        q: filters.q, limit: filters.limit, cursor: cursors[cursors.length - 1] })}`);
      if (seq !== loadSeq) return;
      nextCursor = page.next_cursor;
      renderPage(page.jobs);
    } catch (error) {
      if (seq !== loadSeq) return;
      if (error.field === 'q') search.setAttribute('aria-invalid', 'true');
      setNotice(status, `Could not load jobs: ${error.message}`, 'error');
    }
  }

  newer.addEventListener('click', () => { if (cursors.length > 1) { cursors.pop(); load(); } });
  older.addEventListener('click', () => { if (nextCursor) { cursors.push(nextCursor); load(); } });
  refreshButton.addEventListener('click', load);

  exportButton.addEventListener('click', async () => {
    exportButton.disabled = true;
    const all = [];
    let cursor = null;
    try {
      do {
        const page = await api(`/api/jobs/mine${query({ status: filters.statuses, action: filters.action,
          q: filters.q, limit: 200, cursor })}`);
        all.push(...page.jobs.map((job) => knownJob(job.job_id) || job));
        cursor = page.next_cursor;
        setNotice(status, `Exporting… ${all.length} jobs`, 'info');
      } while (cursor && all.length < EXPORT_MAX);
      download(`jobs-${fileStamp()}.csv`, toCsv(EXPORT_COLUMNS, all.map((job) => EXPORT_COLUMNS.map((c) => job[c]))));
      setNotice(status, `Exported ${all.length} job${all.length === 1 ? '' : 's'}${cursor ? ` (first ${EXPORT_MAX})` : ''}.`, 'success');
    } catch (error) {
      setNotice(status, `Export failed: ${error.message}`, 'error');
    } finally {
      exportButton.disabled = false;
    }
  });

  const stops = [
    on('job', ({ job }) => schedule(job)),
    on('resync', (detail) => {
      if (detail.connectedAt && loadStartedAt >= detail.connectedAt) return; // loaded after connecting
      load();
    }),
  ];
  load();
  return () => {
    stops.forEach((stop) => stop());
    if (frame) cancelAnimationFrame(frame);
    loadSeq += 1;
  };
}
