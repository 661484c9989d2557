// Job detail: the job's fields, customers grouped by outcome and HTTP status, the customer list,
// cancel, "retry failed customers", and links to the scoped views. Follows the job live.

import { api, query } from '../api.js';
import { el, notice, replace, setNotice, setText } from '../dom.js';
import {
  ACTIVE_STATUSES, formatCount, formatDuration, formatTime, progressText, randomKey,
} from '../format.js';
import { knownJob, on, rememberJob } from '../state.js';
import { toast } from '../toasts.js';
import { plainBadge, statusWidget, updateStatus } from './widgets.js';

const CUSTOMER_STATUSES = ['PENDING', 'SUCCESS', 'FAILED', 'SKIPPED'];
const SUMMARY_REFRESH_MS = 1000;

export function mount(root, { match }) {
  const jobId = decodeURIComponent(match[1]);
  const status = notice('info');
  let job = null;
  let widget = null;
  let summaryTimer = 0;
  let lastSummaryAt = 0;
  let alive = true;

  const title = el('h1', { class: 'job-title' }, 'Job ', el('span', { class: 'mono', text: jobId }));
  const head = el('div', { class: 'page-head' }, title);
  const fields = el('dl', { class: 'fields', id: 'job-fields' });
  const buttons = el('div', { class: 'buttons' });
  const summaryBody = el('tbody');
  const summary = el('table', { class: 'data', id: 'customer-summary' },
    el('caption', { text: 'Customers by outcome' }),
    el('thead', {}, el('tr', {}, ['Outcome', 'HTTP status', 'Customers', 'Example error']
      .map((name) => el('th', { scope: 'col', text: name, class: name === 'Customers' ? 'num' : null })))),
    summaryBody);
  const customerFilter = el('select', { id: 'customer-filter' }, el('option', { value: '', text: 'All outcomes' }),
    CUSTOMER_STATUSES.map((s) => el('option', { value: s, text: s })));
  const customerBody = el('tbody');
  const moreButton = el('button', { type: 'button', class: 'btn', text: 'Load more', hidden: true });
  let customerCursor = null;
  const customers = el('section', { class: 'card' },
    el('div', { class: 'section-head' }, el('h2', { text: 'Customers' }),
      el('div', { class: 'field inline' }, el('label', { for: customerFilter.id, text: 'Outcome' }), customerFilter)),
    el('div', { class: 'table-wrap' }, el('table', { class: 'data', id: 'customer-list' },
      el('thead', {}, el('tr', {}, ['CID', 'Outcome', 'HTTP status', 'Error', 'Updated']
        .map((name) => el('th', { scope: 'col', text: name })))),
      customerBody)),
    moreButton);

  const body = el('div', { class: 'detail', hidden: true },
    el('section', { class: 'card' }, fields, buttons),
    el('section', { class: 'card' }, summary),
    customers);
  replace(root, el('p', { class: 'crumbs' }, el('a', { href: '#/jobs', text: '← My jobs' })), head, status, body);

  function renderFields() {
    const row = (name, value) => (value === null || value === undefined || value === ''
      ? null : [el('dt', { text: name }), el('dd', {}, value)]);
    const link = (id) => (id ? el('a', { href: `#/jobs/${encodeURIComponent(id)}`, class: 'mono', text: id }) : '');
    if (!widget) {
      widget = statusWidget(job);
      title.append(' ', widget.root);
    } else {
      updateStatus(widget, job);
    }
    replace(fields,
      row('Action', `${job.action_name} (code ${job.action_code})`),
      row('Cluster', job.cluster),
      row('Customers', progressText(job)),
      row('HTTP status', job.http_status ?? ''),
      row('Error', job.error_message || ''),
      row('Created', formatTime(job.created_at, { alwaysDate: true })),
      row('Started', formatTime(job.started_at, { alwaysDate: true })),
      row('Finished', formatTime(job.finished_at, { alwaysDate: true })),
      row('Processing time', formatDuration(job.duration_ms)),
      row('Attempts', job.attempts ?? ''),
      row('Source', job.batch_id ? `CSV upload ${job.batch_id}` : 'typed IDs'),
      row('Retry of', link(job.parent_job_id)));
    const cancellable = ACTIVE_STATUSES.has(job.status) && !job.cancel_requested;
    const retryable = ['FAILED', 'PARTIAL', 'CANCELLED'].includes(job.status) && job.failed > 0;
    // a cancelled job's customers that were never sent (SKIPPED) can be sent in a new job too
    const unsent = job.status === 'CANCELLED' ? job.customer_count - job.done : 0;
    // rebuilt only when they change: a button replaced on every progress event could not be clicked
    const buttonsKey = `${cancellable}|${job.cancel_requested}|${job.status}|${retryable ? job.failed : 0}|${unsent}`;
    if (buttonsKey === buttons.dataset.key) return;
    buttons.dataset.key = buttonsKey;
    replace(buttons,
      cancellable ? el('button', { type: 'button', class: 'btn btn-danger', id: 'job-cancel', text: 'Cancel job', onclick: cancel }) : null,
      job.cancel_requested && ACTIVE_STATUSES.has(job.status) ? el('span', { class: 'hint', text: 'Cancelling…' }) : null,
      retryable ? el('button', { type: 'button', class: 'btn btn-primary', id: 'job-retry',
        text: `Retry ${formatCount(job.failed)} failed customer${job.failed === 1 ? '' : 's'}`, onclick: () => retry(false) }) : null,
      unsent > 0 ? el('button', { type: 'button', class: 'btn btn-primary', id: 'job-retry-unsent',
        text: unsentLabel(unsent, job.failed), onclick: () => retry(true) }) : null,
      el('a', { class: 'btn', href: `#/scope/customers?job=${encodeURIComponent(job.job_id)}`, text: 'Customer status' }),
      el('a', { class: 'btn', href: `#/scope/apps?job=${encodeURIComponent(job.job_id)}`, text: 'App status' }));
  }

  function renderSummary(groups) {
    if (!groups.length) {
      replace(summaryBody, el('tr', {}, el('td', { colspan: 4, text: 'No customers.' })));
      return;
    }
    replace(summaryBody, groups.map((g) => el('tr', { dataset: { status: g.status } },
      el('td', {}, plainBadge(g.status)),
      el('td', { text: g.http_status ?? '—' }),
      el('td', { class: 'num', text: formatCount(g.count) }),
      el('td', { class: 'error-text', text: g.example_error || '' }))));
  }

  async function loadCustomers(append = false) {
    if (!append) customerCursor = null;
    try {
      const page = await api(`/api/jobs/${encodeURIComponent(jobId)}/customers${query({
        status: customerFilter.value, cursor: customerCursor, limit: 200 })}`);
      if (!alive) return;
      const rows = page.customers.map((c) => el('tr', {},
        el('td', { class: 'mono', text: c.cid }), el('td', {}, plainBadge(c.status)),
        el('td', { text: c.http_status ?? '' }), el('td', { class: 'error-text', text: c.error_message || '' }),
        el('td', { text: formatTime(c.updated_at) })));
      if (append) customerBody.append(...rows);
      else replace(customerBody, rows.length ? rows : el('tr', {}, el('td', { colspan: 5, text: 'No customers.' })));
      customerCursor = page.next_cursor;
      moreButton.hidden = !customerCursor;
    } catch (error) {
      setNotice(status, `Could not load customers: ${error.message}`, 'error');
    }
  }

  async function load() {
    try {
      const answer = await api(`/api/jobs/${encodeURIComponent(jobId)}`);
      if (!alive) return;
      rememberJob(answer.job);
      job = knownJob(answer.job.job_id) || answer.job;
      lastSummaryAt = Date.now();
      body.hidden = false;
      renderFields();
      renderSummary(answer.customer_summary || []);
      loadCustomers();
    } catch (error) {
      if (!alive) return;
      const text = error.status === 403 ? 'This job belongs to another user.'
        : error.status === 404 ? 'There is no such job.' : error.message;
      setNotice(status, text, 'error');
      body.hidden = true;
    }
  }

  // while a job runs, its summary is refetched at most once a second; its final state once more
  function refreshSoon(final) {
    if (summaryTimer) return;
    const wait = final ? 0 : Math.max(0, SUMMARY_REFRESH_MS - (Date.now() - lastSummaryAt));
    summaryTimer = setTimeout(async () => {
      summaryTimer = 0;
      lastSummaryAt = Date.now();
      try {
        const answer = await api(`/api/jobs/${encodeURIComponent(jobId)}`);
        if (!alive) return;
        renderSummary(answer.customer_summary || []);
        if (final) loadCustomers();
      } catch { /* the next event or a reload will try again */ }
    }, wait);
  }

  async function cancel() {
    try {
      const answer = await api(`/api/jobs/${encodeURIComponent(jobId)}/cancel`, { method: 'POST' });
      rememberJob(answer.job);
      job = knownJob(jobId) || answer.job;
      renderFields();
      toast({ severity: 'info', title: 'Cancel requested', message: 'No further batch will be sent.' });
    } catch (error) {
      setNotice(status, error.message, 'error');
    }
  }

  function unsentLabel(unsent, failed) {
    const total = unsent + failed;
    const noun = `customer${total === 1 ? '' : 's'}`;
    return failed > 0 ? `Retry ${formatCount(total)} failed and unsent ${noun}` : `Send the ${formatCount(unsent)} unsent ${noun}`;
  }

  async function retry(includeSkipped) {
    try {
      const answer = await api(`/api/jobs/${encodeURIComponent(jobId)}/retry`, { method: 'POST',
        headers: { 'Idempotency-Key': randomKey() }, json: { include_skipped: includeSkipped } });
      rememberJob(answer.job);
      toast({ severity: 'success', title: 'Retry started',
        message: `${formatCount(answer.job.customer_count)} customers in a new job`,
        href: `#/jobs/${encodeURIComponent(answer.job.job_id)}`, linkText: 'Open the new job' });
      location.hash = `#/jobs/${encodeURIComponent(answer.job.job_id)}`;
    } catch (error) {
      setNotice(status, error.message, 'error');
    }
  }

  customerFilter.addEventListener('change', () => loadCustomers());
  moreButton.addEventListener('click', () => loadCustomers(true));
  const stops = [
    on('job', ({ job: latest }) => {
      if (latest.job_id !== jobId || !job) return;
      const wasActive = ACTIVE_STATUSES.has(job.status);
      job = latest;
      renderFields();
      refreshSoon(wasActive && !ACTIVE_STATUSES.has(latest.status));
    }),
    on('resync', () => load()),
  ];
  load();
  return () => {
    alive = false;
    clearTimeout(summaryTimer);
    stops.forEach((stop) => stop());
  };
}
