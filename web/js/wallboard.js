// The wallboard: read-only, dark, large. Authenticated by a read token in the URL fragment
// (#token=...), which goes into the Socket.IO auth and the Authorization header, never into a URL.
// Reconnects forever; when not live it says how old its data is. Besides the Set Action jobs: a
// strip of today's deployments (rolled back ones highlighted) and the running pipeline jobs.

import { api, useBearerToken } from './api.js';
import { el, replace, setText } from './dom.js';
import {
  ACTIVE_STATUSES, PIPELINE_ACTIVE, failureText, formatAge, formatCount, formatDuration, formatPercent, formatTime,
  isToday, recordStatusText, shortId, shortSha,
} from './format.js';
import { connect, request, subscribeDashboard } from './socket.js';
import { knownRecord, live, on, rememberRecord, rememberSummary, session } from './state.js';
import { installAlertToasts } from './toasts.js';

const MAX_RUNNING_SHOWN = 10;
const MAX_RUNNING_KEPT = 500;
const MAX_FAILURES = 8;
const MAX_ALERTS = 6;
const RECENT_ALERTS_MS = 3_600_000; // a wallboard opened now lists the last hour's alerts
const REFETCH_MS = 60_000; // a full refetch now and then keeps days-long sessions exact
const RETRY_ME_MS = 15_000;
const MAX_PIPELINES_SHOWN = 6;
const MAX_DEPLOYS_SHOWN = 8;
const MAX_KEPT = 500;

const $ = (id) => document.getElementById(id);
const CONNECTION_TEXT = { connecting: 'Connecting…', live: 'Live', reconnecting: 'Reconnecting…', offline: 'Offline' };

const running = new Map();
let failures = [];
const alerts = [];
const pipelines = new Map(); // pending, queued and running pipeline jobs
const deploys = new Map(); // today's deployments
let summary = null;
let pipelinesFetch = null; // ids of the records events brought while the lists below were being fetched
let frame = 0;
let lastFetchAt = 0;

function tokenFromFragment() {
  const params = new URLSearchParams(location.hash.slice(1));
  return (params.get('token') || '').trim();
}

function banner(text, kind = 'warning') {
  const node = $('wb-banner');
  node.className = `wb-banner wb-banner-${kind}`;
  setText(node, text);
  node.hidden = !text;
}

function renderCounts(stats) {
  if (!stats || !stats.counts) return;
  setText($('wb-running-count'), formatCount(stats.counts.IN_PROGRESS));
  setText($('wb-queued-count'), formatCount(stats.counts.QUEUED));
  setText($('wb-today'), formatCount(stats.today?.total));
  setText($('wb-today-success'), formatCount(stats.today?.success));
  setText($('wb-today-failed'), formatCount(stats.today?.failed));
  setText($('wb-rate'), formatPercent(stats.success_rate));
  setText($('wb-avg'), stats.avg_duration_ms === null ? '–' : formatDuration(stats.avg_duration_ms));
  fitCardValues();
}

/**
 * Each count card's value fits its card: the style sheet gives the largest size, and a value wider
 * than its card ("100.0 %" on a 1920 px wallboard, "1,234,567" or "123 h 05 min" anywhere) is set
 * smaller in proportion. All sizes are reset, then all measured, then all set: two layouts in all.
 */
function fitCardValues() {
  const values = [...document.querySelectorAll('.wb-card strong')];
  for (const node of values) node.style.fontSize = '';
  const sizes = values.map((node) => {
    const room = node.clientWidth;
    const needed = node.scrollWidth;
    if (!room || needed <= room) return null;
    // text width follows the font size; a little spare for rounding
    return Math.floor(parseFloat(getComputedStyle(node).fontSize) * (room / needed) * 0.97 * 10) / 10;
  });
  values.forEach((node, i) => { if (sizes[i] !== null) node.style.fontSize = `${sizes[i]}px`; });
}

function renderLists() {
  frame = 0;
  const jobs = [...running.values()].sort((a, b) => (a.created_at < b.created_at ? 1 : -1));
  replace($('wb-running'), jobs.length ? jobs.slice(0, MAX_RUNNING_SHOWN).map((job) => el('li', { class: 'wb-job', dataset: { jobId: job.job_id } },
    el('div', { class: 'wb-line' },
      el('span', { class: `badge badge-${job.status.toLowerCase()}`, text: job.status.replace('_', ' ') }),
      el('span', { class: 'wb-action', text: job.action_name }),
      el('span', { class: 'mono', text: shortId(job.job_id) }),
      el('span', { class: 'wb-count', text: `${formatCount(job.done)} / ${formatCount(job.customer_count)}` })),
    el('progress', { class: 'wb-bar', max: Math.max(1, job.customer_count), value: job.done,
      'aria-label': `${job.done} of ${job.customer_count} customers done` }))) : el('li', { class: 'wb-empty', text: 'Nothing running.' }),
  jobs.length > MAX_RUNNING_SHOWN ? el('li', { class: 'wb-more', text: `+ ${jobs.length - MAX_RUNNING_SHOWN} more` }) : null);
  replace($('wb-failures'), failures.length ? failures.map((job) => el('li', { class: 'wb-failure', dataset: { jobId: job.job_id } },
    el('div', { class: 'wb-line' },
      el('span', { class: `badge badge-${job.status.toLowerCase()}`, text: job.status }),
      el('span', { class: 'wb-action', text: job.action_name }),
      el('span', { class: 'mono', text: shortId(job.job_id) }),
      el('span', { class: 'wb-time', text: formatTime(job.finished_at || job.updated_at) })),
    el('div', { class: 'wb-error', text: failureText(job) }))) : el('li', { class: 'wb-empty', text: 'No recent failures.' }));
  replace($('wb-alerts'), alerts.length ? alerts.map((alert) => el('li', { class: `wb-alert wb-alert-${alert.severity === 'critical' ? 'critical' : 'warning'}`,
    dataset: { kind: String(alert.kind || '') } },
    el('div', { class: 'wb-line' }, el('strong', { text: String(alert.kind || 'alert').replace(/_/g, ' ') }),
      el('span', { class: 'wb-time', text: formatTime(alert.at) })),
    el('div', { text: String(alert.message || '') }))) : el('li', { class: 'wb-empty', text: 'No alerts.' }));
  renderPipelines();
  renderDeploys();
}

function elapsedText(job, now = Date.now()) {
  if (job.status !== 'running' || !job.started_at) return formatTime(job.created_at);
  return formatAge(Date.parse(job.started_at), now);
}

function renderPipelines() {
  // running first, then waiting (pending, queued); newest first in each
  const jobs = [...pipelines.values()].sort((a, b) => ((a.status === 'running') !== (b.status === 'running')
    ? (a.status === 'running' ? -1 : 1) : (a.created_at < b.created_at ? 1 : -1)));
  const runningNow = jobs.filter((job) => job.status === 'running').length;
  setText($('wb-pipelines-figures'), `${formatCount(runningNow)} running`
    + (jobs.length > runningNow ? ` · ${formatCount(jobs.length - runningNow)} waiting` : ''));
  replace($('wb-pipelines'), jobs.length ? jobs.slice(0, MAX_PIPELINES_SHOWN).map((job) => el('li', {
    class: 'wb-chip wb-pjob', dataset: { jobId: job.job_id, status: job.status },
    title: [job.repo, job.ref, shortSha(job.commit_sha), job.agent_id].filter(Boolean).join(' · ') },
  el('span', { class: `badge badge-rec-${job.status}`, text: recordStatusText(job.status) }),
  el('strong', { text: job.job_type }),
  el('span', { class: 'wb-repo', text: job.ref ? `${job.repo} ${job.ref}` : job.repo }),
  el('span', { class: 'wb-time wb-elapsed', dataset: { startedAt: job.status === 'running' ? job.started_at || '' : '' },
    text: elapsedText(job) }))) : el('li', { class: 'wb-empty', text: 'No pipeline job running.' }),
  jobs.length > MAX_PIPELINES_SHOWN ? el('li', { class: 'wb-more', text: `+ ${jobs.length - MAX_PIPELINES_SHOWN} more` }) : null);
}

/** The last moment a deployment moved (what orders the strip). */
function lastMove(d) {
  return d.rolled_back_at || d.live_at || d.staged_at || d.updated_at || d.created_at || '';
}

function deployedToday(d) {
  return [d.created_at, d.staged_at, d.live_at, d.rolled_back_at, d.updated_at].some((at) => isToday(at));
}

function renderDeploys() {
  const list = [...deploys.values()].filter(deployedToday).sort((a, b) => (lastMove(a) < lastMove(b) ? 1 : -1));
  const rolledBack = list.filter((d) => d.status === 'rolled_back').length;
  const today = summary && Number.isInteger(summary.deployments_today) ? summary.deployments_today : list.length;
  setText($('wb-deploys-figures'), `${formatCount(today)} today`
    + (rolledBack ? ` · ${formatCount(rolledBack)} rolled back` : ''));
  replace($('wb-deploys'), list.length ? list.slice(0, MAX_DEPLOYS_SHOWN).map((d) => el('li', {
    class: `wb-chip wb-deploy${d.status === 'rolled_back' ? ' wb-deploy-back' : ''}${d.status === 'failed' ? ' wb-deploy-failed' : ''}`,
    dataset: { deploymentId: d.id, status: d.status },
    title: [d.commit_author, shortSha(d.commit_sha), d.cluster && `on ${d.cluster}`].filter(Boolean).join(' · ') },
  el('strong', { class: 'wb-service', text: d.service_name }),
  el('span', { class: 'wb-version', text: d.version }),
  el('span', { class: `badge badge-rec-${d.status}`, text: recordStatusText(d.status) }),
  d.status === 'rolled_back' ? el('span', { class: 'wb-rollback', text: `↩ to ${d.rolled_back_to || '?'}`
    + (d.rollback_reason ? `: ${d.rollback_reason}` : '') }) : null,
  d.status === 'failed' && d.failure_reason ? el('span', { class: 'wb-rollback', text: d.failure_reason }) : null,
  el('span', { class: 'wb-time', text: formatTime(lastMove(d)) })))
    : el('li', { class: 'wb-empty', text: 'No deployments today.' }),
  list.length > MAX_DEPLOYS_SHOWN ? el('li', { class: 'wb-more', text: `+ ${list.length - MAX_DEPLOYS_SHOWN} more` }) : null);
}

function tickPipelines() {
  const now = Date.now();
  for (const node of document.querySelectorAll('#wb-pipelines .wb-elapsed[data-started-at]')) {
    if (node.dataset.startedAt) setText(node, formatAge(Date.parse(node.dataset.startedAt), now));
  }
}

function scheduleRender() {
  if (!frame) frame = requestAnimationFrame(renderLists);
}

function renderClock() {
  const now = Date.now();
  tickPipelines();
  setText($('wb-clock'), formatTime(new Date(now).toISOString()));
  const pill = $('conn');
  pill.dataset.state = live.state;
  setText($('conn-text'), CONNECTION_TEXT[live.state] || live.state);
  const since = live.lastDataAt || lastFetchAt;
  if (!since) {
    setText($('wb-age'), '');
  } else if (live.state === 'live') {
    setText($('wb-age'), `Data as of ${formatTime(new Date(since).toISOString())}`);
  } else {
    setText($('wb-age'), `Data ${formatAge(since, now)} old`);
  }
  if (live.state !== 'live' && since && live.state !== 'connecting') {
    banner(`${CONNECTION_TEXT[live.state]} – showing data from ${formatTime(new Date(since).toISOString())} `
      + `(${formatAge(since, now)} old). ${live.reason || 'Trying to reconnect'}…`, live.state === 'offline' ? 'error' : 'warning');
  } else if (live.state === 'live' && !$('wb-banner').dataset.sticky) {
    banner('');
  }
}

async function refetch() {
  try {
    const [stats, active, failed] = await Promise.all([
      api('/api/stats/mine'),
      api('/api/jobs/mine?status=QUEUED,IN_PROGRESS&limit=200'),
      api(`/api/jobs/mine?status=FAILED,PARTIAL&limit=${MAX_FAILURES}`),
    ]);
    renderCounts(stats);
    running.clear();
    for (const job of active.jobs) running.set(job.job_id, job);
    failures = failed.jobs.slice(0, MAX_FAILURES);
    lastFetchAt = Date.now();
    live.lastDataAt = lastFetchAt;
    scheduleRender();
    renderClock();
  } catch { /* the clock shows how old the data is; the next connect or interval tries again */ }
  refetchPipelines();
}

// Pipeline jobs and deployments: apart, so a server without them still shows the Set Action jobs
async function refetchPipelines() {
  const arrived = { pipeline: new Set(), deployment: new Set() };
  pipelinesFetch = arrived;
  const [active, recent, current] = await Promise.allSettled([
    api('/api/dashboard/jobs/running?limit=100'),
    api('/api/dashboard/deployments?limit=100'),
    api('/api/dashboard/summary'),
  ]);
  if (active.status === 'fulfilled') {
    pipelines.clear();
    for (const job of active.value.jobs) { rememberRecord('pipeline', job); pipelines.set(job.job_id, job); }
  }
  if (recent.status === 'fulfilled') {
    deploys.clear();
    for (const d of recent.value.deployments) {
      rememberRecord('deployment', d);
      if (deployedToday(d)) deploys.set(d.id, d);
    }
  }
  if (current.status === 'fulfilled' && rememberSummary(current.value)) summary = current.value;
  // the answers may predate events that came meanwhile: those are applied again
  if (pipelinesFetch === arrived) pipelinesFetch = null;
  for (const id of arrived.pipeline) onPipeline({ job: knownRecord('pipeline', id) });
  for (const id of arrived.deployment) onDeployment({ deployment: knownRecord('deployment', id) });
  scheduleRender();
}

function onPipeline({ job }) {
  if (!job) return;
  if (pipelinesFetch) pipelinesFetch.pipeline.add(job.job_id);
  if (PIPELINE_ACTIVE.has(job.status)) {
    pipelines.set(job.job_id, job);
    if (pipelines.size > MAX_KEPT) pipelines.delete(pipelines.keys().next().value);
  } else {
    pipelines.delete(job.job_id);
  }
  scheduleRender();
}

function onDeployment({ deployment }) {
  if (!deployment) return;
  if (pipelinesFetch) pipelinesFetch.deployment.add(deployment.id);
  deploys.set(deployment.id, deployment);
  if (deploys.size > MAX_KEPT) deploys.delete(deploys.keys().next().value);
  scheduleRender();
}

function onJob({ job }) {
  if (ACTIVE_STATUSES.has(job.status)) {
    running.set(job.job_id, job);
    if (running.size > MAX_RUNNING_KEPT) running.delete(running.keys().next().value);
  } else {
    running.delete(job.job_id);
  }
  if (job.status === 'FAILED' || job.status === 'PARTIAL') {
    failures = [job, ...failures.filter((f) => f.job_id !== job.job_id)].slice(0, MAX_FAILURES);
  }
  scheduleRender();
}

async function identify() {
  try {
    const me = await api('/api/auth/me');
    session.user = me.user;
    setText($('wb-owner'), `${me.user.username}'s jobs`);
    $('wb-banner').dataset.sticky = '';
    return true;
  } catch (error) {
    if (error.status === 0) {
      banner('The server cannot be reached. Retrying…', 'error');
    } else if (error.status === 401 || error.status === 403) {
      $('wb-banner').dataset.sticky = '1';
      banner(`The token was refused (${error.message}). Create a read token under Tokens and open `
        + '/wallboard#token=<token>. Retrying…', 'error');
    }
    return false;
  }
}

function bindFullscreen() {
  const button = $('wb-fullscreen');
  if (!document.fullscreenEnabled) return;
  button.hidden = false;
  button.addEventListener('click', () => {
    if (document.fullscreenElement) document.exitFullscreen();
    else document.documentElement.requestFullscreen().catch(() => {});
  });
  document.addEventListener('fullscreenchange', () => {
    setText(button, document.fullscreenElement ? 'Exit full screen' : 'Full screen');
  });
}

async function start() {
  installAlertToasts($('toasts'));
  bindFullscreen();
  setInterval(renderClock, 1000);
  renderClock();
  window.addEventListener('resize', fitCardValues);
  const token = tokenFromFragment();
  if (!token) {
    $('wb-banner').dataset.sticky = '1';
    banner('No token: open this page as /wallboard#token=<read token> (create one under Tokens in the dashboard).', 'error');
    renderLists();
    return;
  }
  useBearerToken(token);
  while (!(await identify())) await new Promise((resolve) => { setTimeout(resolve, RETRY_ME_MS); });
  on('job', onJob);
  on('stats', (stats) => { renderCounts(stats); });
  on('pipeline', onPipeline);
  on('deployment', onDeployment);
  on('summary', (next) => { summary = next; scheduleRender(); });
  on('alert', (alert) => {
    if (!alert || alerts.some((shown) => shown.alert_id === alert.alert_id)) return; // replayed
    alerts.unshift(alert);
    alerts.sort((a, b) => String(b.at).localeCompare(String(a.at)));
    alerts.splice(MAX_ALERTS);
    scheduleRender();
  });
  // a reconnect resumes from the last job event (and replays missed alerts); when that is not
  // possible, or on the first connect, the server or the socket layer says resync: refetch
  on('resync', () => refetch());
  on('connection', renderClock);
  on('refused', (refusal) => banner(`Connection refused: ${refusal.message}. Retrying…`, 'error'));
  connect({ token, resume: true, recentAlertsMs: RECENT_ALERTS_MS, onRefused: () => true });
  subscribeDashboard();
  setInterval(() => {
    if (live.state === 'live') {
      refetch();
      request('get-stats').then(renderCounts).catch(() => {});
    }
  }, REFETCH_MS);
  refetch();
}

start();
