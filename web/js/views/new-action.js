// New Set Action: pick cluster and action, type CIDs or attach a CSV, confirm the count, start,
// and follow the new job live.

import { api, clustersAndActions } from '../api.js';
import {
  clearFieldErrors, el, field, notice, replace, setNotice, setText, showFieldError,
} from '../dom.js';
import { formatCount, parseCidCsv, parseCidText, progressText, randomKey } from '../format.js';
import { knownJob, on, rememberJob } from '../state.js';
import { statusWidget, updateStatus } from './widgets.js';

const MAX_CSV_BYTES = 5 * 1024 * 1024;
const PREVIEW = 10;

export function mount(root) {
  const cluster = el('select', { id: 'na-cluster', name: 'cluster', required: true });
  const action = el('select', { id: 'na-action', name: 'action', required: true });
  const modeTyped = el('input', { type: 'radio', name: 'mode', id: 'na-mode-typed', value: 'typed', checked: true });
  const modeCsv = el('input', { type: 'radio', name: 'mode', id: 'na-mode-csv', value: 'csv' });
  const cids = el('textarea', { id: 'na-cids', name: 'cids', rows: 8, spellcheck: 'false',
    placeholder: 'C000001\nC000002, C000003' });
  const file = el('input', { type: 'file', id: 'na-file', name: 'file', accept: '.csv,text/csv,text/plain' });
  const token = el('input', { type: 'password', id: 'na-token', name: 'upstream_token', autocomplete: 'off',
    maxlength: 4096 });
  const typedField = field('Customer IDs', cids, 'One per line, or separated by commas, semicolons or spaces.');
  const csvField = field('CSV file', file, 'A column headed cid, customer_id or account_id, or the IDs in the first column. Up to 5 MB.');
  csvField.hidden = true;
  const formStatus = notice('error');
  const review = el('button', { type: 'submit', class: 'btn btn-primary', id: 'na-review', text: 'Review…' });
  const form = el('form', { class: 'card form', id: 'na-form', novalidate: true, 'aria-labelledby': 'na-title' },
    formStatus,
    el('div', { class: 'row' }, field('Cluster', cluster), field('Action', action)),
    el('fieldset', { class: 'mode' }, el('legend', { text: 'Customers' }),
      el('label', { class: 'check', for: modeTyped.id }, modeTyped, ' Type or paste IDs'),
      el('label', { class: 'check', for: modeCsv.id }, modeCsv, ' Upload a CSV file')),
    typedField, csvField,
    el('details', { class: 'advanced' }, el('summary', { text: 'Your own cluster token (optional)' }),
      field('Upstream bearer token', token, 'Sent to the cluster with this Set Action only; never stored.')),
    el('div', { class: 'buttons' }, review));

  // confirmation step
  const confirmText = el('p', { class: 'confirm-text', id: 'na-confirm-text' });
  const preview = el('ul', { class: 'cid-preview mono', 'aria-label': 'First customer IDs' });
  const confirmStatus = notice('error');
  const confirmButton = el('button', { type: 'button', class: 'btn btn-primary', id: 'na-confirm', text: 'Start Set Action' });
  const backButton = el('button', { type: 'button', class: 'btn', id: 'na-back', text: 'Back' });
  const confirmPanel = el('section', { class: 'card confirm', id: 'na-confirm-panel', hidden: true,
    'aria-labelledby': 'na-confirm-title' },
  el('h2', { id: 'na-confirm-title', tabindex: '-1', text: 'Confirm the Set Action' }),
  confirmText, preview, confirmStatus,
  el('div', { class: 'buttons' }, confirmButton, backButton));

  // result
  const resultPanel = el('section', { class: 'card result', id: 'na-result', hidden: true, 'aria-live': 'polite' });

  replace(root, el('div', { class: 'page-head' }, el('h1', { id: 'na-title', text: 'New Set Action' })),
    form, confirmPanel, resultPanel);

  clustersAndActions().then(({ clusters, actions }) => {
    replace(cluster, clusters.map((c) => el('option', { value: c.id, text: `${c.name} (${c.id})` })));
    replace(action, actions.map((a) => el('option', { value: a.name, text: `${a.name} (code ${a.code})` })));
  }).catch((error) => setNotice(formStatus, `Could not load clusters and actions: ${error.message}`, 'error'));

  const controls = { cluster, action, cids, file, upstream_token: token };
  function setMode() {
    typedField.hidden = !modeTyped.checked;
    csvField.hidden = !modeCsv.checked;
  }
  modeTyped.addEventListener('change', setMode);
  modeCsv.addEventListener('change', setMode);

  let planned = null; // what the confirmation step will send

  async function plan() {
    const base = { cluster: cluster.value, clusterName: cluster.selectedOptions[0]?.textContent || cluster.value,
      action: action.value, token: token.value.trim(), key: randomKey() };
    if (!base.cluster) { showFieldError(cluster, 'Choose a cluster.'); return null; }
    if (!base.action) { showFieldError(action, 'Choose an action.'); return null; }
    if (modeTyped.checked) {
      const parsed = parseCidText(cids.value);
      if (parsed.invalid.length) {
        showFieldError(cids, `${parsed.invalid.length} invalid customer ID(s), e.g. "${parsed.invalid[0]}": `
          + 'a CID is 1-64 letters, digits or . _ : - starting with a letter or digit.');
        return null;
      }
      if (!parsed.cids.length) { showFieldError(cids, 'Enter at least one customer ID.'); return null; }
      return { ...base, mode: 'typed', cids: parsed.cids };
    }
    const chosen = file.files[0];
    if (!chosen) { showFieldError(file, 'Choose a CSV file.'); return null; }
    if (chosen.size > MAX_CSV_BYTES) { showFieldError(file, 'The file is larger than 5 MB.'); return null; }
    const parsed = parseCidCsv(await chosen.text());
    if (parsed.invalid.length) {
      showFieldError(file, `${parsed.invalid.length} invalid customer ID(s) in the file, e.g. "${parsed.invalid[0]}".`);
      return null;
    }
    if (!parsed.cids.length) { showFieldError(file, 'The file has no customer IDs.'); return null; }
    return { ...base, mode: 'csv', cids: parsed.cids, file: chosen };
  }

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    clearFieldErrors(form);
    setNotice(formStatus, '');
    planned = await plan();
    if (!planned) return;
    const n = planned.cids.length;
    replace(confirmText, 'Run ', el('strong', { text: planned.action }), ' on ',
      el('strong', { id: 'na-count', text: `${formatCount(n)} customer${n === 1 ? '' : 's'}` }),
      ' on ', el('strong', { text: planned.clusterName }),
      planned.mode === 'csv' ? ` (from ${planned.file.name})` : '', '?');
    replace(preview, planned.cids.slice(0, PREVIEW).map((cid) => el('li', { text: cid })),
      n > PREVIEW ? el('li', { class: 'more', text: `… and ${formatCount(n - PREVIEW)} more` }) : null);
    setNotice(confirmStatus, '');
    form.hidden = true;
    confirmPanel.hidden = false;
    confirmPanel.querySelector('h2').focus();
  });

  backButton.addEventListener('click', () => {
    confirmPanel.hidden = true;
    form.hidden = false;
    review.focus();
  });

  confirmButton.addEventListener('click', async () => {
    if (!planned) return;
    confirmButton.disabled = true;
    try {
      const headers = { 'Idempotency-Key': planned.key }; // a double click starts one job, not two
      let answer;
      if (planned.mode === 'csv') {
        const body = new FormData();
        body.set('cluster', planned.cluster);
        body.set('action', planned.action);
        if (planned.token) body.set('upstream_token', planned.token);
        body.set('file', planned.file, planned.file.name);
        answer = await api('/api/set-actions', { method: 'POST', form: body, headers });
      } else {
        answer = await api('/api/set-actions', { method: 'POST', headers,
          json: { cluster: planned.cluster, action: planned.action, cids: planned.cids,
            ...(planned.token ? { upstream_token: planned.token } : {}) } });
      }
      token.value = '';
      showResult(answer.job);
    } catch (error) {
      const control = controls[error.field] || (error.field === 'cids' && planned.mode === 'csv' ? file : null);
      if (control) {
        confirmPanel.hidden = true;
        form.hidden = false;
        showFieldError(control, error.message);
        control.focus();
      } else if (error.code === 'unknown_action') {
        confirmPanel.hidden = true;
        form.hidden = false;
        showFieldError(action, error.message);
      } else {
        setNotice(confirmStatus, error.message, 'error');
      }
    } finally {
      confirmButton.disabled = false;
    }
  });

  let stopFollowing = null;
  function showResult(job) {
    rememberJob(job);
    const widget = statusWidget(job);
    const progress = el('span', { class: 'num', text: progressText(job) });
    replace(resultPanel,
      el('h2', { text: 'Set Action started' }),
      el('p', {}, 'Job ', el('a', { href: `#/jobs/${encodeURIComponent(job.job_id)}`, class: 'mono', id: 'na-job-id',
        text: job.job_id }), ' '),
      el('p', { class: 'result-status' }, widget.root, ' ', progress),
      el('p', {}, el('a', { href: '#/jobs', text: 'See it in My jobs' }), ' · ',
        el('a', { href: `#/jobs/${encodeURIComponent(job.job_id)}`, text: 'Job detail' }), ' · ',
        el('button', { type: 'button', class: 'btn btn-quiet', id: 'na-another', text: 'Start another',
          onclick: () => { resultPanel.hidden = true; form.hidden = false; cids.focus(); } })));
    const render = (latest) => { updateStatus(widget, latest); setText(progress, progressText(latest)); };
    render(knownJob(job.job_id) || job);
    if (stopFollowing) stopFollowing();
    stopFollowing = on('job', ({ job: latest }) => { if (latest.job_id === job.job_id) render(latest); });
    confirmPanel.hidden = true;
    form.hidden = true;
    resultPanel.hidden = false;
    planned = null;
  }

  return () => { if (stopFollowing) stopFollowing(); };
}
