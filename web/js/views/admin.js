// Admin (admins only): every user's jobs with filters, sorting, keyset pages and CSV export;
// all-users stats; every node's system figures (admin-system.js); the app-status cache with
// invalidation; users, tokens and the audit log.

import { api, clustersAndActions, query } from '../api.js';
import {
  clearFieldErrors, el, field, notice, replace, setNotice, setText, showFieldError,
} from '../dom.js';
import {
  JOB_STATUSES, formatCount, formatDuration, formatPercent, formatTime, progressText, shortId,
} from '../format.js';
import { on, rememberJob, knownJob, session } from '../state.js';
import { statusWidget, updateStatus, notAvailable } from './widgets.js';
import { tokenTable } from './tokens.js';
import { adminSystem } from './admin-system.js';

const SECTIONS = [
  { id: 'jobs', label: 'All jobs' },
  { id: 'stats', label: 'Stats' },
  { id: 'system', label: 'System' },
  { id: 'cache', label: 'Cache' },
  { id: 'users', label: 'Users' },
  { id: 'tokens', label: 'Tokens' },
  { id: 'audit', label: 'Audit log' },
];
const SORTS = [
  ['created_at', 'Created'], ['updated_at', 'Updated'], ['finished_at', 'Finished'], ['status', 'Status'],
  ['duration', 'Processing time'],
];

export function mount(root, { match, params }) {
  const section = SECTIONS.some((s) => s.id === match[1]) ? match[1] : 'jobs';
  if (!session.user || session.user.role !== 'admin') {
    replace(root, el('h1', { text: 'Admin' }),
      el('p', { class: 'notice notice-error', role: 'alert', text: 'Admins only: your account is not an admin.' }));
    return null;
  }
  const body = el('div', { class: 'admin-body', id: `admin-section-${section}` });
  replace(root,
    el('div', { class: 'page-head' }, el('h1', { text: 'Admin' })),
    el('nav', { class: 'tabs', 'aria-label': 'Admin sections' }, SECTIONS.map((s) => el('a', {
      class: 'tab', href: `#/admin/${s.id}`, id: `admin-tab-${s.id}`,
      'aria-current': s.id === section ? 'page' : null, text: s.label }))),
    body);
  const views = {
    jobs: adminJobs, stats: adminStats, system: adminSystem, cache: adminCache, users: adminUsers, tokens: adminTokens,
    audit: adminAudit,
  };
  return views[section](body, params) || null;
}

function unavailableOr(status, error, what, body) {
  if (error.status === 404 && (error.code === 'not_found' || error.code === 'http_404')) {
    body.append(notAvailable(what));
  } else {
    setNotice(status, `Could not load ${what.toLowerCase()}: ${error.message}`, 'error');
  }
}

// -- all jobs --------------------------------------------------------------------------------

function adminJobs(body, params) {
  const filters = {
    status: (params.get('status') || '').split(',').filter((s) => JOB_STATUSES.includes(s)),
    user: params.get('user') || '', action: params.get('action') || '', cluster: params.get('cluster') || '',
    text: params.get('text') || '', from: params.get('from') || '', to: params.get('to') || '',
    sort: SORTS.some(([key]) => key === params.get('sort')) ? params.get('sort') : 'created_at',
    order: params.get('order') === 'asc' ? 'asc' : 'desc',
  };
  const controls = {
    status: el('select', { id: 'admin-status', multiple: true, size: 3 },
      JOB_STATUSES.map((s) => el('option', { value: s, text: s, selected: filters.status.includes(s) }))),
    user: el('input', { id: 'admin-user', value: filters.user, maxlength: 64, placeholder: 'username' }),
    action: el('select', { id: 'admin-action' }, el('option', { value: '', text: 'All' })),
    cluster: el('select', { id: 'admin-cluster' }, el('option', { value: '', text: 'All' })),
    text: el('input', { id: 'admin-text', type: 'search', value: filters.text, maxlength: 200,
      placeholder: 'job id, CID or error' }),
    from: el('input', { id: 'admin-from', type: 'date', value: filters.from }),
    to: el('input', { id: 'admin-to', type: 'date', value: filters.to }),
    sort: el('select', { id: 'admin-sort' }, SORTS.map(([key, label]) => el('option', { value: key, text: label,
      selected: key === filters.sort }))),
    order: el('select', { id: 'admin-order' }, el('option', { value: 'desc', text: 'Descending', selected: filters.order === 'desc' }),
      el('option', { value: 'asc', text: 'Ascending', selected: filters.order === 'asc' })),
  };
  const form = el('form', { class: 'filters admin-filters', novalidate: true, role: 'search', 'aria-label': 'Filter all jobs' },
    field('Status', controls.status), field('User', controls.user), field('Action', controls.action),
    field('Cluster', controls.cluster), field('Search', controls.text), field('Created from', controls.from),
    field('Created to', controls.to), field('Sort by', controls.sort), field('Order', controls.order),
    el('div', { class: 'buttons' }, el('button', { type: 'submit', class: 'btn btn-primary', text: 'Apply' })));
  const status = notice('info');
  const tbody = el('tbody');
  const older = el('button', { type: 'button', class: 'btn', text: 'Next page →' });
  const newer = el('button', { type: 'button', class: 'btn', text: '← Previous page' });
  const exportLink = el('a', { class: 'btn', id: 'admin-export', text: 'Export CSV', download: '' });
  replace(body, form, status,
    el('div', { class: 'section-head' }, el('h2', { text: 'All jobs' }), exportLink),
    el('div', { class: 'table-wrap' }, el('table', { class: 'data', id: 'admin-jobs' },
      el('thead', {}, el('tr', {}, ['Job', 'User', 'Action', 'Cluster', 'Status', 'Customers', 'Created', 'Processing time']
        .map((name) => el('th', { scope: 'col', text: name, class: ['Customers', 'Processing time'].includes(name) ? 'num' : null })))),
      tbody)),
    el('div', { class: 'pager' }, newer, older));

  clustersAndActions().then(({ clusters, actions }) => {
    controls.action.append(...actions.map((a) => el('option', { value: a.name, text: a.name, selected: a.name === filters.action })));
    controls.cluster.append(...clusters.map((c) => el('option', { value: c.id, text: c.name, selected: c.id === filters.cluster })));
  }).catch(() => {});

  const apiParams = (extra = {}) => ({
    status: filters.status, user: filters.user, action: filters.action, cluster: filters.cluster, text: filters.text,
    created_from: filters.from, created_to: filters.to, // a bare date as created_to means the whole day
    sort: filters.sort, order: filters.order, ...extra,
  });
  exportLink.href = `/admin/jobs.csv${query(apiParams())}`; // streamed by the server, every matching job

  form.addEventListener('submit', (event) => {
    event.preventDefault();
    clearFieldErrors(form);
    const next = {
      status: [...controls.status.selectedOptions].map((o) => o.value), user: controls.user.value.trim(),
      action: controls.action.value, cluster: controls.cluster.value, text: controls.text.value.trim(),
      from: controls.from.value, to: controls.to.value, sort: controls.sort.value, order: controls.order.value,
    };
    location.hash = `#/admin/jobs${query(next)}`;
  });

  const cursors = [null];
  let nextCursor = null;
  const rows = new Map();
  async function load() {
    try {
      const page = await api(`/admin/jobs${query(apiParams({ cursor: cursors[cursors.length - 1], limit: 50 }))}`);
      nextCursor = page.next_cursor;
      rows.clear();
      replace(tbody, page.jobs.length ? page.jobs.map((fetched) => {
        rememberJob(fetched);
        const job = { ...fetched, ...(knownJob(fetched.job_id) || {}) };
        const widget = statusWidget(job);
        const progress = el('td', { class: 'num', text: progressText(job) });
        rows.set(job.job_id, { widget, progress });
        return el('tr', { dataset: { jobId: job.job_id } },
          el('td', {}, el('a', { class: 'mono', href: `#/jobs/${encodeURIComponent(job.job_id)}`, title: job.job_id,
            text: shortId(job.job_id) })),
          el('td', { text: job.username ?? job.user_id }), el('td', { text: job.action_name }),
          el('td', { text: job.cluster }), el('td', {}, widget.root), progress,
          el('td', { text: formatTime(job.created_at) }), el('td', { class: 'num', text: formatDuration(job.duration_ms) }));
      }) : el('tr', {}, el('td', { colspan: 8, text: 'No job matches.' })));
      newer.disabled = cursors.length <= 1;
      older.disabled = !nextCursor;
      setNotice(status, '');
    } catch (error) {
      if (error.field && controls[error.field === 'created_from' ? 'from' : error.field === 'created_to' ? 'to' : error.field]) {
        showFieldError(controls[error.field === 'created_from' ? 'from' : error.field === 'created_to' ? 'to' : error.field], error.message);
      }
      unavailableOr(status, error, 'The all-jobs list', body);
    }
  }
  older.addEventListener('click', () => { if (nextCursor) { cursors.push(nextCursor); load(); } });
  newer.addEventListener('click', () => { if (cursors.length > 1) { cursors.pop(); load(); } });
  load();
  const stop = on('job', ({ job }) => {
    const row = rows.get(job.job_id);
    if (row) { updateStatus(row.widget, job); setText(row.progress, progressText(job)); }
  });
  const stopReconnect = on('reconnected', load);
  return () => { stop(); stopReconnect(); };
}

// -- stats -----------------------------------------------------------------------------------

function adminStats(body) {
  const status = notice('info');
  const content = el('div', { id: 'admin-stats-content' });
  replace(body, status, content);
  api('/admin/jobs/stats').then((stats) => {
    const counts = stats.counts || {};
    const today = stats.today || {};
    const card = (label, value) => el('div', { class: 'stat-card' }, el('span', { class: 'label', text: label }),
      el('strong', { class: 'value', text: value }));
    const breakdown = (title, items, nameKey, nameLabel) => {
      if (!items || !items.length) return null;
      const columns = [[nameKey, nameLabel], ['created', 'Started'], ['success', 'Succeeded'], ['partial', 'Partial'],
        ['failed', 'Failed'], ['cancelled', 'Cancelled'], ['success_rate', 'Success rate', formatPercent],
        ['avg_duration_ms', 'Average time', formatDuration], ['p95_duration_ms', 'p95 time', formatDuration]]
        .filter(([key]) => items.some((item) => key in item));
      return el('section', { class: 'card' }, el('h2', { text: title }), el('div', { class: 'table-wrap' },
        el('table', { class: 'data compact' },
          el('thead', {}, el('tr', {}, columns.map(([key, label]) => el('th', { scope: 'col', text: label,
            class: key === nameKey ? null : 'num' })))),
          el('tbody', {}, items.map((item) => el('tr', {}, columns.map(([key, , format]) => el('td', {
            class: key === nameKey ? null : 'num',
            text: format ? format(item[key]) : (typeof item[key] === 'number' ? formatCount(item[key]) : item[key] ?? '') }))))))));
    };
    replace(content,
      el('div', { class: 'cards' },
        card('Running', formatCount(stats.running ?? counts.IN_PROGRESS)),
        card('Queued', formatCount(stats.queued ?? counts.QUEUED)),
        card('Started today', formatCount(today.total)),
        card('Failed today', formatCount(today.failed)),
        card('Success rate', formatPercent(stats.success_rate)),
        card('Average time', formatDuration(stats.avg_duration_ms)),
        stats.p95_duration_ms !== undefined ? card('p95 time', formatDuration(stats.p95_duration_ms)) : null),
      el('section', { class: 'card' }, el('h2', { text: 'Jobs by status' }), el('p', {},
        JOB_STATUSES.map((s) => el('span', { class: 'count-chip' }, el('span', { class: `badge badge-${s.toLowerCase()}`, text: s.replace('_', ' ') }),
          ` ${formatCount(counts[s] || 0)} `)))),
      breakdown(`Last ${(stats.daily || []).length} days (UTC), all users`, stats.daily, 'day', 'Day'),
      breakdown('By action', stats.by_action, 'action_name', 'Action'),
      breakdown('By cluster', stats.by_cluster, 'cluster', 'Cluster'));
  }).catch((error) => unavailableOr(status, error, 'Admin stats', body));
}

// -- cache -----------------------------------------------------------------------------------

function adminCache(body) {
  const status = notice('info');
  const tbody = el('tbody');
  const summary = el('p', { class: 'summary', id: 'admin-cache-summary' });
  const cluster = el('select', { id: 'inv-cluster' }, el('option', { value: '', text: 'Any cluster' }));
  const app = el('input', { id: 'inv-app', maxlength: 64, placeholder: 'ALL' });
  const job = el('input', { id: 'inv-job', maxlength: 64, placeholder: 'job id (optional)' });
  const all = el('input', { type: 'checkbox', id: 'inv-all' });
  const form = el('form', { class: 'card form', novalidate: true },
    el('h2', { text: 'Invalidate entries' }),
    el('div', { class: 'row' }, field('Job', job), field('Cluster', cluster), field('App', app)),
    el('label', { class: 'check', for: all.id }, all, ' Everything (all clusters and apps)'),
    el('div', { class: 'buttons' }, el('button', { type: 'submit', class: 'btn btn-danger', text: 'Invalidate' })));
  replace(body, status,
    el('section', { class: 'card' }, el('h2', { text: 'App-status cache' }), summary,
      el('div', { class: 'table-wrap' }, el('table', { class: 'data compact', id: 'admin-cache' },
        el('thead', {}, el('tr', {}, ['Cluster', 'Entries', 'Expired entries', 'Hits', 'Misses', 'Hit rate']
          .map((name) => el('th', { scope: 'col', text: name, class: name === 'Cluster' ? null : 'num' })))), tbody))),
    form);
  clustersAndActions().then(({ clusters }) => {
    cluster.append(...clusters.map((c) => el('option', { value: c.id, text: c.name })));
  }).catch(() => {});

  async function load() {
    try {
      const stats = await api('/api/cache/stats');
      const t = stats.total || {};
      setText(summary, `${formatCount(t.entries)} entries · ${formatCount(t.hits)} hits · ${formatCount(t.misses)} misses · `
        + `hit rate ${formatPercent(t.hit_rate === null || t.hit_rate === undefined ? null : t.hit_rate * 100)} · as of ${formatTime(stats.as_of)}`);
      replace(tbody, Object.entries(stats.clusters || {}).map(([id, c]) => el('tr', {},
        el('td', { text: id }), el('td', { class: 'num', text: formatCount(c.entries) }),
        el('td', { class: 'num', text: formatCount(c.expired_entries) }), el('td', { class: 'num', text: formatCount(c.hits) }),
        el('td', { class: 'num', text: formatCount(c.misses) }),
        el('td', { class: 'num', text: formatPercent(c.hit_rate === null || c.hit_rate === undefined ? null : c.hit_rate * 100) }))));
    } catch (error) {
      unavailableOr(status, error, 'Cache statistics', body);
    }
  }
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    clearFieldErrors(form);
    const payload = {};
    if (job.value.trim()) payload.job_id = job.value.trim();
    if (cluster.value && !payload.job_id) payload.cluster = cluster.value;
    if (app.value.trim()) payload.app = app.value.trim();
    if (all.checked && !payload.job_id) payload.all = true;
    try {
      const answer = await api('/api/cache/invalidate', { method: 'POST', json: payload });
      setNotice(status, `Invalidated ${formatCount(answer.invalidated)} entr${answer.invalidated === 1 ? 'y' : 'ies'}.`, 'success');
      load();
    } catch (error) {
      const control = { job_id: job, cluster, app, all }[error.field];
      if (control) showFieldError(control, error.message);
      else setNotice(status, error.message, 'error');
    }
  });
  load();
}

// -- users, tokens, audit ----------------------------------------------------------------------

function simpleTable(body, { path, what, listKey, columns, id }) {
  const status = notice('info');
  const tbody = el('tbody');
  replace(body, status, el('div', { class: 'table-wrap' }, el('table', { class: 'data', id },
    el('thead', {}, el('tr', {}, columns.map(([, label]) => el('th', { scope: 'col', text: label })))), tbody)));
  api(path).then((answer) => {
    const items = answer[listKey] || [];
    replace(tbody, items.length ? items.map((item) => el('tr', {}, columns.map(([key, , format]) => {
      const value = item[key];
      return el('td', { text: format ? format(value, item) : (value === null || value === undefined ? '' : typeof value === 'object' ? JSON.stringify(value) : value) });
    }))) : el('tr', {}, el('td', { colspan: columns.length, text: 'Nothing yet.' })));
  }).catch((error) => unavailableOr(status, error, what, body));
}

function adminUsers(body) {
  const list = el('div');
  const username = el('input', { id: 'new-user-name', maxlength: 64, autocomplete: 'off' });
  const password = el('input', { id: 'new-user-password', type: 'password', autocomplete: 'new-password' });
  const role = el('select', { id: 'new-user-role' }, el('option', { value: 'user', text: 'user' }),
    el('option', { value: 'admin', text: 'admin' }));
  const status = notice('info');
  const form = el('form', { class: 'card form', novalidate: true }, el('h2', { text: 'New user' }), status,
    el('div', { class: 'row' }, field('Username', username), field('Password', password), field('Role', role)),
    el('div', { class: 'buttons' }, el('button', { type: 'submit', class: 'btn btn-primary', text: 'Create user' })));
  replace(body, list, form);
  const load = () => simpleTable(list, { path: '/admin/users', what: 'The user list', listKey: 'users', id: 'admin-users',
    columns: [['id', 'Id'], ['username', 'Username'], ['role', 'Role'], ['job_total', 'Jobs', formatCount],
      ['jobs', 'Running', (v) => formatCount(v ? v.IN_PROGRESS : 0)], ['disabled', 'Disabled', (v) => (v ? 'yes' : 'no')],
      ['created_at', 'Created', (v) => formatTime(v, { alwaysDate: true })]] });
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    clearFieldErrors(form);
    try {
      const { user } = await api('/admin/users', { method: 'POST',
        json: { username: username.value.trim(), password: password.value, role: role.value } });
      setNotice(status, `User ${user.username} created.`, 'success');
      username.value = '';
      password.value = '';
      load();
    } catch (error) {
      const control = { username, password, role }[error.field];
      if (control) showFieldError(control, error.message);
      else setNotice(status, error.message, 'error');
    }
  });
  load();
}

function adminTokens(body) {
  const table = tokenTable({ all: true });
  replace(body, el('section', { class: 'card' }, el('h2', { text: "Everyone's tokens" }), table.root));
  table.load();
}

function adminAudit(body, params) {
  const user = el('input', { id: 'audit-user', maxlength: 64, value: params.get('user') || '', placeholder: 'username or id' });
  const kind = el('input', { id: 'audit-kind', maxlength: 400, value: params.get('kind') || '',
    placeholder: 'login_failed, set_action, …' });
  const form = el('form', { class: 'filters', role: 'search', 'aria-label': 'Filter the audit log' },
    field('User', user), field('Kinds', kind),
    el('button', { type: 'submit', class: 'btn', text: 'Apply' }));
  const list = el('div');
  replace(body, form, list);
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    location.hash = `#/admin/audit${query({ user: user.value.trim(), kind: kind.value.trim() })}`;
  });
  simpleTable(list, { path: `/admin/audit${query({ user: params.get('user'), kind: params.get('kind'), limit: 200 })}`,
    what: 'The audit log', listKey: 'entries', id: 'admin-audit',
    columns: [['at', 'When', (v) => formatTime(v, { alwaysDate: true })], ['kind', 'What'], ['username', 'Who'],
      ['subject', 'Subject'], ['detail', 'Detail'], ['ip', 'From']] });
}
