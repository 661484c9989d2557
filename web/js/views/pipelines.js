// Pipelines: the build, test and deploy jobs CI/CD agents report. What runs now (pending, queued,
// running, with a ticking elapsed time) and the recent jobs (filters, keyset pages), both updated
// in place from `pipeline-update` events; the figures at the top from `dashboard-summary`.

import { api, query } from '../api.js';
import { el, notice, replace, setNotice, setText, uniqueId } from '../dom.js';
import {
  PIPELINE_ACTIVE, PIPELINE_STATUSES, firstLine, formatAge, formatCount, formatSeconds, formatTime,
  recordBadgeClass, recordStatusText, safeHttpUrl, shortId, shortSha,
} from '../format.js';
import { subscribeDashboard } from '../socket.js';
import { dashboard, knownRecord, on, rememberRecord, rememberSummary, session } from '../state.js';
import { notAvailable } from './widgets.js';

const PAGE_SIZE = 50;
const RUNNING_LIMIT = 100;
const COLUMNS = ['Job', 'Repository', 'Commit', 'Agent', 'Status', 'Exit code', 'Duration', 'Started', 'Logs'];
const NUMERIC = new Set(['Exit code', 'Duration']);
const EXPLAINED = new Set(['failed', 'error', 'timeout', 'cancelled']); // badges with the error message as a tooltip

function readFilters(params) {
  const statuses = (params.get('status') || '').split(',').map((s) => s.trim().toLowerCase())
    .filter((s) => PIPELINE_STATUSES.includes(s));
  return {
    statuses,
    agent: (params.get('agent') || '').trim().slice(0, 100),
    repo: (params.get('repo') || '').trim().slice(0, 200),
  };
}

function filtersHash(filters) {
  return `#/pipelines${query({ status: filters.statuses, agent: filters.agent, repo: filters.repo })}`;
}

/** The figures of the dashboard summary as cards; returns {root, update(summary)}. */
export function summaryCards({ deployments = false } = {}) {
  const values = {
    running: el('strong', { class: 'value', id: 'sum-jobs-running', text: '–' }),
    failed: el('strong', { class: 'value', id: 'sum-jobs-failed-today', text: '–' }),
    deployments: el('strong', { class: 'value', id: 'sum-deployments-today', text: '–' }),
    services: el('strong', { class: 'value', id: 'sum-live-services', text: '–' }),
  };
  const card = (label, value, extra = '') => el('div', { class: `stat-card ${extra}` },
    el('span', { class: 'label', text: label }), value);
  const root = el('div', { class: 'cards summary-cards' },
    card('Pipeline jobs running', values.running, 'running'),
    card('Pipeline jobs failed today', values.failed, 'bad'),
    card('Deployments today', values.deployments, 'good'),
    deployments ? card('Services live', values.services) : null);
  return {
    root,
    update(summary) {
      if (!summary || typeof summary !== 'object') return;
      setText(values.running, formatCount(summary.jobs_running));
      setText(values.failed, formatCount(summary.jobs_failed_today));
      setText(values.deployments, formatCount(summary.deployments_today));
      setText(values.services, formatCount(Object.keys(summary.live_by_service || {}).length));
    },
  };
}

/** A table of pipeline jobs whose rows can be updated in place; returns its parts. */
function jobTable(id, label) {
  const tbody = el('tbody');
  const table = el('table', { class: 'data pipelines-table', id, 'aria-label': label },
    el('thead', {}, el('tr', {}, COLUMNS.map((name) => el('th', { scope: 'col', text: name,
      class: NUMERIC.has(name) ? 'num' : null })))),
    tbody);
  return { table, tbody, rows: new Map() };
}

function makeRow(job) {
  const cells = {
    job: el('td', {}, el('strong', { class: 'job-type', text: job.job_type }), ' ',
      el('span', { class: 'mono muted', title: job.job_id, text: shortId(job.job_id) })),
    repo: el('td', { class: 'wrap' }),
    commit: el('td', { class: 'wrap' }),
    agent: el('td', { class: 'mono' }),
    status: el('td', {}),
    exit: el('td', { class: 'num mono' }),
    duration: el('td', { class: 'num' }),
    started: el('td', {}),
    logs: el('td', {}),
  };
  const badge = el('span', { class: 'badge' });
  const tip = el('span', { class: 'sr-only', id: uniqueId('pl-tip'), hidden: true });
  cells.status.append(badge, tip);
  const tr = el('tr', { dataset: { jobId: job.job_id } }, Object.values(cells));
  const row = { tr, cells, badge, tip, key: '', job };
  fillRow(row, job);
  return row;
}

function fillRow(row, job) {
  row.job = job;
  const key = `${job.updated_at}|${job.status}|${job.exit_code}|${job.logs_url}|${job.duration_seconds}`;
  if (key === row.key) return;
  row.key = key;
  const { cells, badge, tip } = row;
  row.tr.dataset.status = job.status;
  badge.className = recordBadgeClass(job.status);
  setText(badge, recordStatusText(job.status));
  const explained = EXPLAINED.has(job.status) && job.error_message;
  if (explained) {
    const text = String(job.error_message);
    setText(tip, text);
    tip.hidden = false;
    badge.dataset.tip = text; // the shared floating tooltip (widgets.installTooltips)
    badge.tabIndex = 0;
    badge.setAttribute('aria-describedby', tip.id);
  } else {
    tip.hidden = true;
    delete badge.dataset.tip;
    badge.removeAttribute('tabindex');
    badge.removeAttribute('aria-describedby');
  }
  replace(cells.repo, el('div', { text: job.repo }),
    job.ref ? el('div', { class: 'sub mono', text: job.ref }) : null);
  replace(cells.commit,
    job.commit_sha ? el('span', { class: 'mono', title: job.commit_sha, text: shortSha(job.commit_sha) }) : null,
    job.commit_message ? el('span', { class: 'commit-message', title: job.commit_message,
      text: ` ${firstLine(job.commit_message, 60)}` }) : null,
    job.commit_author ? el('div', { class: 'sub', text: job.commit_author }) : null);
  setText(cells.agent, job.agent_id);
  setText(cells.exit, job.exit_code === null || job.exit_code === undefined ? '' : String(job.exit_code));
  setText(cells.started, formatTime(job.started_at || job.created_at));
  cells.started.title = job.started_at ? 'started' : 'created (not started yet)';
  const url = safeHttpUrl(job.logs_url);
  replace(cells.logs, url ? el('a', { href: url, target: '_blank', rel: 'noopener noreferrer',
    class: 'logs-link', text: 'Logs', title: url }) : null);
  tickRow(row);
}

/** The duration cell: the reported duration, or the time since it started while it runs. */
function tickRow(row, now = Date.now()) {
  const job = row.job;
  if (job.duration_seconds !== null && job.duration_seconds !== undefined) {
    setText(row.cells.duration, formatSeconds(job.duration_seconds));
    row.cells.duration.classList.remove('elapsed');
  } else if (job.status === 'running' && job.started_at) {
    setText(row.cells.duration, formatAge(Date.parse(job.started_at), now));
    row.cells.duration.classList.add('elapsed');
  } else {
    setText(row.cells.duration, '');
  }
}

/** Insert a row in a table kept newest first (by created_at). */
function insertSorted(parts, row) {
  parts.tbody.querySelector('.empty-row')?.remove();
  let before = null;
  for (const tr of parts.tbody.children) {
    const other = parts.rows.get(tr.dataset.jobId);
    if (other && other.job.created_at < row.job.created_at) { before = tr; break; }
  }
  parts.tbody.insertBefore(row.tr, before);
}

function emptyRow(text, ...extra) {
  return el('tr', { class: 'empty-row' }, el('td', { colspan: COLUMNS.length }, text, ...extra));
}

export function mount(root, { params }) {
  const filters = readFilters(params);
  const isAdmin = Boolean(session.user && session.user.role === 'admin');
  const cursors = [null];
  let nextCursor = null;
  let loadSeq = 0;
  let loadStartedAt = 0;
  let alive = true;
  // events that arrive while a load is under way: its answer may predate them, so they are applied again
  const arrivedDuringLoad = new Set();

  // -- controls -------------------------------------------------------------------------
  const statusBoxes = PIPELINE_STATUSES.map((status) => {
    const box = el('input', { type: 'checkbox', value: status, id: `pl-status-${status}`,
      checked: filters.statuses.includes(status) });
    return { box, label: el('label', { class: 'check', for: box.id }, box, ` ${status}`) };
  });
  const agent = el('input', { id: 'pl-agent', value: filters.agent, maxlength: 100, placeholder: 'ci-1' });
  const repo = el('input', { id: 'pl-repo', value: filters.repo, maxlength: 200, placeholder: 'acme/api' });
  const filterForm = el('form', { class: 'filters pl-filters', role: 'search', 'aria-label': 'Filter pipeline jobs' },
    el('fieldset', { class: 'status-filter' }, el('legend', { text: 'Status' }), statusBoxes.map((s) => s.label)),
    el('div', { class: 'field inline' }, el('label', { for: agent.id, text: 'Agent' }), agent),
    el('div', { class: 'field inline' }, el('label', { for: repo.id, text: 'Repository' }), repo),
    el('button', { type: 'submit', class: 'btn', text: 'Apply' }),
    el('a', { href: '#/pipelines', class: 'btn btn-quiet', text: 'Clear' }));

  const status = notice('info');
  const cards = summaryCards();
  const running = jobTable('pipelines-running', 'Pipeline jobs pending, queued or running; rows update live');
  const recent = jobTable('pipelines-table', 'Pipeline jobs, newest first; rows update live');
  const runningCount = el('span', { class: 'count-chip', id: 'pl-running-count' });
  const newer = el('button', { type: 'button', class: 'btn', id: 'pl-page-newer', text: '← Newer' });
  const older = el('button', { type: 'button', class: 'btn', id: 'pl-page-older', text: 'Older →' });
  const pageLabel = el('span', { class: 'page-label', 'aria-live': 'polite' });
  const refreshButton = el('button', { type: 'button', class: 'btn btn-quiet', id: 'pl-refresh', text: 'Refresh' });
  const body = el('div', {},
    el('section', { class: 'card' },
      el('div', { class: 'section-head' }, el('h2', { text: 'Running now' }), runningCount),
      el('div', { class: 'table-wrap' }, running.table)),
    el('section', { class: 'card' },
      el('div', { class: 'section-head' }, el('h2', { text: isAdmin ? 'Recent jobs (all users)' : 'Recent jobs' })),
      filterForm,
      el('div', { class: 'table-wrap' }, recent.table),
      el('div', { class: 'pager' }, newer, pageLabel, older)));

  replace(root,
    el('div', { class: 'page-head' }, el('h1', { text: 'Pipelines' }),
      el('div', { class: 'actions' }, el('a', { href: '#/deployments', class: 'btn', text: 'Deployments' }), refreshButton)),
    el('p', { class: 'hint page-hint', text: 'Build, test and deploy jobs reported by your CI/CD agents (a token with scope agent, '
      + 'made on the Tokens page).' }),
    cards.root, status, body);

  function applyFilters() {
    const next = {
      statuses: statusBoxes.filter((s) => s.box.checked).map((s) => s.box.value),
      agent: agent.value.trim(),
      repo: repo.value.trim(),
    };
    const hash = filtersHash(next);
    if (hash !== location.hash) location.hash = hash; // the router mounts the view again
  }
  filterForm.addEventListener('submit', (event) => { event.preventDefault(); applyFilters(); });
  for (const { box } of statusBoxes) box.addEventListener('change', applyFilters);

  // -- rows -----------------------------------------------------------------------------
  const visible = (job) => isAdmin || !session.user || job.user_id === session.user.id;

  function matches(job) {
    if (!visible(job)) return false;
    if (filters.statuses.length && !filters.statuses.includes(job.status)) return false;
    if (filters.agent && job.agent_id !== filters.agent) return false;
    if (filters.repo && job.repo !== filters.repo) return false;
    return true;
  }

  function renderRows(parts, jobs, empty) {
    parts.rows.clear();
    const fragment = document.createDocumentFragment();
    for (const fetched of jobs) {
      rememberRecord('pipeline', fetched);
      const job = knownRecord('pipeline', fetched.job_id) || fetched; // an event may have brought newer data
      const row = makeRow(job);
      parts.rows.set(job.job_id, row);
      fragment.append(row.tr);
    }
    if (!jobs.length) fragment.append(empty);
    parts.tbody.replaceChildren(fragment);
  }

  function updateRunningCount() {
    const n = running.rows.size;
    setText(runningCount, n ? `${n} job${n === 1 ? '' : 's'}` : '');
  }

  function onRunningJob(job) {
    const row = running.rows.get(job.job_id);
    if (!visible(job)) return;
    if (!PIPELINE_ACTIVE.has(job.status)) {
      if (row) {
        row.tr.remove();
        running.rows.delete(job.job_id);
        if (!running.rows.size) running.tbody.append(emptyRow('Nothing running.'));
      }
    } else if (row) {
      fillRow(row, job);
    } else {
      const added = makeRow(job);
      running.rows.set(job.job_id, added);
      insertSorted(running, added);
    }
    updateRunningCount();
  }

  function onRecentJob(job) {
    const row = recent.rows.get(job.job_id);
    if (row) {
      fillRow(row, job);
      return;
    }
    // only the first page takes new rows; a job older than this page's last row belongs further on
    if (cursors.length > 1 || !matches(job)) return;
    const last = recent.tbody.lastElementChild;
    const lastRow = last && recent.rows.get(last.dataset.jobId);
    if (nextCursor && lastRow && job.created_at < lastRow.job.created_at) return;
    const added = makeRow(job);
    recent.rows.set(job.job_id, added);
    insertSorted(recent, added);
    updatePager();
  }

  function onJob(job) {
    if (!job) return;
    onRunningJob(job);
    onRecentJob(job);
  }

  function updatePager() {
    newer.disabled = cursors.length <= 1;
    older.disabled = !nextCursor;
    setText(pageLabel, `Page ${cursors.length} · ${recent.rows.size} job${recent.rows.size === 1 ? '' : 's'}`);
  }

  async function load() {
    const seq = ++loadSeq;
    loadStartedAt = Date.now();
    arrivedDuringLoad.clear();
    setNotice(status, '');
    const filtered = filters.statuses.length || filters.agent || filters.repo;
    try {
      const [active, page] = await Promise.all([
        api(`/api/dashboard/jobs/running${query({ limit: RUNNING_LIMIT })}`),
        api(`/api/dashboard/jobs${query({ status: filters.statuses, agent_id: filters.agent, repo: filters.repo,
          limit: PAGE_SIZE, cursor: cursors[cursors.length - 1] })}`),
      ]);
      if (seq !== loadSeq) return;
      renderRows(running, active.jobs.filter(visible), emptyRow('Nothing running.'));
      updateRunningCount();
      nextCursor = page.next_cursor;
      renderRows(recent, page.jobs, filtered ? emptyRow('No pipeline job matches these filters.')
        : emptyRow('No pipeline jobs yet. Give a CI/CD agent a token with scope agent: ',
          el('a', { href: '#/tokens', text: 'Tokens' }), '.'));
      updatePager();
      for (const id of arrivedDuringLoad) onJob(knownRecord('pipeline', id));
    } catch (error) {
      if (seq !== loadSeq) return;
      if (error.status === 404 && (error.code === 'not_found' || error.code === 'http_404')) {
        replace(body, notAvailable('Pipelines'));
      } else {
        if (error.field === 'agent_id') agent.setAttribute('aria-invalid', 'true');
        if (error.field === 'repo') repo.setAttribute('aria-invalid', 'true');
        setNotice(status, `Could not load pipeline jobs: ${error.message}`, 'error');
      }
    }
  }

  async function loadSummary() {
    try {
      const summary = await api('/api/dashboard/summary');
      if (alive && rememberSummary(summary)) cards.update(summary); // unless a newer one was pushed
    } catch { /* the cards stay as they are; the socket brings the next one */ }
  }

  newer.addEventListener('click', () => { if (cursors.length > 1) { cursors.pop(); load(); } });
  older.addEventListener('click', () => { if (nextCursor) { cursors.push(nextCursor); load(); } });
  refreshButton.addEventListener('click', () => { load(); loadSummary(); });

  const stops = [
    on('pipeline', ({ job }) => {
      arrivedDuringLoad.add(job.job_id);
      onJob(job);
    }),
    on('summary', (summary) => cards.update(summary)),
    on('tick', (now) => {
      for (const parts of [running, recent]) {
        for (const row of parts.rows.values()) if (row.job.status === 'running') tickRow(row, now);
      }
    }),
    on('resync', (detail) => {
      if (detail.connectedAt && loadStartedAt >= detail.connectedAt) return; // loaded after connecting
      load();
    }),
  ];
  cards.update(dashboard.summary);
  subscribeDashboard();
  loadSummary();
  load();
  return () => {
    alive = false;
    loadSeq += 1;
    stops.forEach((stop) => stop());
  };
}
