// Deployments: what is live per service (from `dashboard-summary`), and per service a timeline of
// its versions through staging, production and rollbacks: who (the commit author), which commit,
// when, the rollback target and reason, the metrics observed. Live from `deployment-update`.

import { api, query } from '../api.js';
import { el, notice, replace, setNotice, setText } from '../dom.js';
import {
  firstLine, formatCount, formatPercent, formatTime, recordBadgeClass, recordStatusText, shortId, shortSha,
} from '../format.js';
import { subscribeDashboard } from '../socket.js';
import { dashboard, knownRecord, on, rememberRecord, rememberSummary, session } from '../state.js';
import { notAvailable } from './widgets.js';
import { summaryCards } from './pipelines.js';

const PAGE_SIZE = 100;
const MAX_PER_SERVICE = 50; // entries kept on screen per service timeline (older ones: "Load older")
const SERVICE_PATTERN = /^[A-Za-z0-9._-]{1,100}$/;

/** The steps of a deployment: [{name, state: done|active|todo|bad|back, at, detail}]. */
function stepsOf(d) {
  const steps = [{ name: 'Created', state: 'done', at: d.created_at }];
  const staging = d.staged_at ? { state: 'done', at: d.staged_at }
    : d.status === 'staging' ? { state: 'active', detail: 'deploying…' } : { state: 'todo' };
  steps.push({ name: 'Staging', ...staging, job: d.staging_job_id });
  const production = d.live_at ? { state: 'done', at: d.live_at }
    : d.status === 'production' ? { state: 'active', detail: 'deploying…' } : { state: 'todo' };
  steps.push({ name: 'Production', ...production, job: d.production_job_id });
  if (d.status === 'rolled_back') {
    const to = d.rolled_back_to ? `to ${d.rolled_back_to}` : '';
    steps.push({ name: 'Rolled back', state: 'back', at: d.rolled_back_at,
      detail: [to, d.rollback_reason].filter(Boolean).join(': ') });
  } else if (d.status === 'failed') {
    steps.push({ name: 'Failed', state: 'bad', at: d.updated_at,
      detail: d.failure_reason || '' });
  }
  // a step never reached after a failure or rollback is skipped, not waiting
  if (d.status === 'failed' || d.status === 'rolled_back') {
    for (const step of steps) if (step.state === 'todo') step.state = 'skipped';
  }
  return steps;
}

function metricsText(d) {
  const parts = [];
  if (d.error_rate !== null && d.error_rate !== undefined) parts.push(`error rate ${formatPercent(d.error_rate * 100)}`);
  if (d.latency_ms !== null && d.latency_ms !== undefined) parts.push(`latency ${formatCount(Math.round(d.latency_ms))} ms`);
  if (d.requests_per_sec !== null && d.requests_per_sec !== undefined) {
    parts.push(`${formatCount(Math.round(d.requests_per_sec * 10) / 10)} req/s`);
  }
  return parts.join(' · ');
}

/** One timeline entry; fill it again with fillEntry(entry, deployment). */
function makeEntry(d, liveId) {
  const node = el('li', { class: 'deploy', id: `deployment-${d.id}`, dataset: { deploymentId: d.id } });
  const entry = { node, key: '', deployment: d };
  fillEntry(entry, d, liveId);
  return entry;
}

function fillEntry(entry, d, liveId = null) {
  entry.deployment = d;
  const isLive = liveId === d.id;
  const key = `${d.updated_at}|${d.status}|${d.metrics_at}|${isLive}`;
  if (key === entry.key) return;
  entry.key = key;
  const { node } = entry;
  node.dataset.status = d.status;
  node.classList.toggle('is-live', isLive);
  node.classList.toggle('rolled-back', d.status === 'rolled_back');
  const metrics = metricsText(d);
  replace(node,
    el('div', { class: 'deploy-head' },
      el('strong', { class: 'deploy-version', text: d.version }),
      el('span', { class: recordBadgeClass(d.status), text: recordStatusText(d.status) }),
      isLive ? el('span', { class: 'live-now', text: 'live now' }) : null,
      d.cluster ? el('span', { class: 'sub', text: `on ${d.cluster}` }) : null,
      el('span', { class: 'deploy-id mono sub', title: d.id, text: shortId(d.id) })),
    el('div', { class: 'deploy-commit' },
      d.commit_author ? el('span', { class: 'deploy-author', text: d.commit_author }) : el('span', { class: 'sub', text: 'unknown author' }),
      d.commit_sha ? el('span', { class: 'mono', title: d.commit_sha, text: shortSha(d.commit_sha) }) : null,
      d.commit_message ? el('span', { class: 'commit-message', title: d.commit_message, text: firstLine(d.commit_message, 90) }) : null),
    el('ol', { class: 'steps', 'aria-label': `Steps of ${d.service_name} ${d.version}` }, stepsOf(d).map((step) => el('li', {
      class: `step step-${step.state}`, dataset: { step: step.name.toLowerCase().replace(' ', '-') },
      title: step.job ? `job ${step.job}` : null },
    el('span', { class: 'step-name', text: step.name }),
    step.at ? el('time', { datetime: step.at, text: formatTime(step.at) }) : null,
    step.detail ? el('span', { class: 'step-detail', text: step.detail }) : null))),
    metrics ? el('div', { class: 'deploy-metrics sub', text: `Metrics${d.metrics_at ? ` (${formatTime(d.metrics_at)})` : ''}: ${metrics}` }) : null);
}

export function mount(root, { params }) {
  const raw = (params.get('service') || '').trim();
  const service = SERVICE_PATTERN.test(raw) ? raw : '';
  const isAdmin = Boolean(session.user && session.user.role === 'admin');
  let cursor = null;
  let loadSeq = 0;
  let loadStartedAt = 0;
  let alive = true;
  let liveByService = {};
  // events that arrive while a load is under way: its answer may predate them, so they are applied again
  const arrivedDuringLoad = new Set();
  const groups = new Map(); // service -> {section, list, entries: Map(id -> entry), liveChip, latest}

  const status = notice('info');
  const cards = summaryCards({ deployments: true });
  const liveBody = el('tbody');
  const liveTable = el('table', { class: 'data', id: 'live-by-service' },
    el('caption', { class: 'sr-only', text: 'What is live per service' }),
    el('thead', {}, el('tr', {}, ['Service', 'Version', 'Live since', 'Cluster', 'Deployment']
      .map((name) => el('th', { scope: 'col', text: name })))),
    liveBody);
  const serviceInput = el('input', { id: 'dep-service', value: service, maxlength: 100, placeholder: 'service name' });
  const filterForm = el('form', { class: 'inline-filter', role: 'search', 'aria-label': 'Filter deployments' },
    el('label', { for: serviceInput.id, text: 'Service' }), serviceInput,
    el('button', { type: 'submit', class: 'btn', text: 'Show' }),
    service ? el('a', { href: '#/deployments', class: 'btn btn-quiet', text: 'All services' }) : null);
  const timelines = el('div', { class: 'timelines', id: 'timelines' });
  const moreButton = el('button', { type: 'button', class: 'btn', id: 'dep-more', text: 'Load older', hidden: true });
  const refreshButton = el('button', { type: 'button', class: 'btn btn-quiet', id: 'dep-refresh', text: 'Refresh' });
  const body = el('div', {},
    el('section', { class: 'card' }, el('h2', { text: isAdmin ? 'Live by service (all users)' : 'Live by service' }),
      el('div', { class: 'table-wrap' }, liveTable)),
    el('section', {},
      el('div', { class: 'section-head timelines-head' }, el('h2', { text: service ? `Timeline of ${service}` : 'Timelines' }),
        filterForm),
      timelines, el('div', { class: 'pager' }, moreButton)));
  replace(root,
    el('div', { class: 'page-head' }, el('h1', { text: 'Deployments' }),
      el('div', { class: 'actions' }, el('a', { href: '#/pipelines', class: 'btn', text: 'Pipelines' }), refreshButton)),
    el('p', { class: 'hint page-hint', text: 'Versions of each service through staging and production, as your CI/CD agents '
      + 'report them; newest first.' }),
    cards.root, status, body);

  filterForm.addEventListener('submit', (event) => {
    event.preventDefault();
    const name = serviceInput.value.trim();
    if (name && !SERVICE_PATTERN.test(name)) {
      serviceInput.setAttribute('aria-invalid', 'true');
      setNotice(status, 'A service name is 1-100 letters, digits, dots, dashes or underscores.', 'error');
      return;
    }
    const hash = `#/deployments${query({ service: name })}`;
    if (hash !== location.hash) location.hash = hash;
  });

  // -- live by service ------------------------------------------------------------------
  function renderLive(summary) {
    if (!summary || typeof summary !== 'object' || !summary.live_by_service) return;
    liveByService = summary.live_by_service;
    const names = Object.keys(liveByService).filter((name) => !service || name === service).sort();
    replace(liveBody, names.length ? names.map((name) => {
      const item = liveByService[name] || {};
      return el('tr', { dataset: { service: name } },
        el('td', {}, el('a', { href: `#/deployments${query({ service: name })}`, text: name })),
        el('td', {}, el('strong', { class: 'deploy-version', text: item.version })),
        el('td', { text: formatTime(item.live_at) }),
        el('td', { text: item.cluster || '' }),
        el('td', {}, item.deployment_id ? el('a', { href: `#/deployments${query({ service: name })}`,
          class: 'mono', title: item.deployment_id, text: shortId(item.deployment_id) }) : ''));
    }) : el('tr', { class: 'empty-row' }, el('td', { colspan: 5, text: 'Nothing is live yet.' })));
    for (const [name, group] of groups) markLive(name, group);
  }

  function markLive(name, group) {
    const liveId = liveByService[name]?.deployment_id || null;
    for (const entry of group.entries.values()) fillEntry(entry, entry.deployment, liveId);
    const item = liveByService[name];
    setText(group.liveChip, item ? `live: ${item.version}` : 'nothing live');
    group.liveChip.classList.toggle('none', !item);
  }

  // -- timelines ------------------------------------------------------------------------
  const visible = (d) => isAdmin || !session.user || d.user_id === session.user.id;

  function groupOf(name, atTop) {
    let group = groups.get(name);
    if (group) return group;
    const list = el('ol', { class: 'timeline', 'aria-label': `Deployments of ${name}, newest first` });
    const liveChip = el('span', { class: 'live-chip' });
    const section = el('section', { class: 'card service-timeline', dataset: { service: name } },
      el('div', { class: 'section-head' },
        el('h3', {}, el('a', { href: `#/deployments${query({ service: name })}`, text: name })), liveChip),
      list);
    group = { section, list, liveChip, entries: new Map(), latest: '' };
    groups.set(name, group);
    timelines.querySelector('.empty')?.remove();
    if (atTop) timelines.prepend(section);
    else timelines.append(section);
    markLive(name, group);
    return group;
  }

  function place(d, { live: fromEvent = false } = {}) {
    const group = groupOf(d.service_name, fromEvent);
    let entry = group.entries.get(d.id);
    const liveId = liveByService[d.service_name]?.deployment_id || null;
    if (entry) {
      fillEntry(entry, d, liveId);
      return;
    }
    entry = makeEntry(d, liveId);
    group.entries.set(d.id, entry);
    let before = null;
    for (const li of group.list.children) {
      const other = group.entries.get(li.dataset.deploymentId);
      if (other && other.deployment.created_at < d.created_at) { before = li; break; }
    }
    group.list.insertBefore(entry.node, before);
    while (group.list.children.length > MAX_PER_SERVICE) {
      const last = group.list.lastElementChild;
      group.entries.delete(last.dataset.deploymentId);
      last.remove();
    }
    if (fromEvent && d.created_at > group.latest && timelines.firstElementChild !== group.section) {
      timelines.prepend(group.section); // the service deployed most recently comes first
    }
    if (d.created_at > group.latest) group.latest = d.created_at;
  }

  function onDeployment(d) {
    if (!d || !visible(d) || (service && d.service_name !== service)) return;
    place(d, { live: true });
  }

  async function load({ more = false } = {}) {
    const seq = ++loadSeq;
    loadStartedAt = Date.now();
    arrivedDuringLoad.clear();
    setNotice(status, '');
    try {
      const page = await api(`/api/dashboard/deployments${query({ service_name: service, limit: PAGE_SIZE,
        cursor: more ? cursor : null })}`);
      if (seq !== loadSeq) return;
      if (!more) {
        groups.clear();
        timelines.replaceChildren();
      }
      for (const fetched of page.deployments) {
        rememberRecord('deployment', fetched);
        place(knownRecord('deployment', fetched.id) || fetched);
      }
      cursor = page.next_cursor;
      moreButton.hidden = !cursor;
      if (!groups.size) {
        timelines.append(el('p', { class: 'card empty' }, service ? `No deployments of ${service}.`
          : 'No deployments yet. A CI/CD agent with a token of scope agent reports them (see README).'));
      }
      for (const id of arrivedDuringLoad) onDeployment(knownRecord('deployment', id));
    } catch (error) {
      if (seq !== loadSeq) return;
      if (error.status === 404 && (error.code === 'not_found' || error.code === 'http_404')) {
        replace(body, notAvailable('Deployments'));
      } else {
        setNotice(status, `Could not load deployments: ${error.message}`, 'error');
      }
    }
  }

  async function loadSummary() {
    try {
      const summary = await api('/api/dashboard/summary');
      if (alive && rememberSummary(summary)) { // unless a newer one was pushed
        cards.update(summary);
        renderLive(summary);
      }
    } catch { /* the socket brings the next one */ }
  }

  moreButton.addEventListener('click', () => load({ more: true }));
  refreshButton.addEventListener('click', () => { load(); loadSummary(); });

  const stops = [
    on('deployment', ({ deployment }) => {
      arrivedDuringLoad.add(deployment.id);
      onDeployment(deployment);
    }),
    on('summary', (summary) => { cards.update(summary); renderLive(summary); }),
    on('resync', (detail) => {
      if (detail.connectedAt && loadStartedAt >= detail.connectedAt) return;
      load();
    }),
  ];
  if (dashboard.summary) {
    cards.update(dashboard.summary);
    renderLive(dashboard.summary);
  } else {
    replace(liveBody, el('tr', { class: 'empty-row' }, el('td', { colspan: 5, text: 'Loading…' })));
  }
  subscribeDashboard();
  loadSummary();
  load();
  return () => {
    alive = false;
    loadSeq += 1;
    stops.forEach((stop) => stop());
  };
}
