// The wallboard: read-only, dark, large. Authenticated by a read token in the URL fragment
// (#token=...), which goes into the Socket.IO auth and the Authorization header, never into a URL.
// Reconnects forever; when not live it says how old its data is.

import { api, useBearerToken } from './api.js';
import { el, replace, setText } from './dom.js';
import {
  ACTIVE_STATUSES, failureText, formatAge, formatCount, formatDuration, formatPercent, formatTime, shortId,
} from './format.js';
import { connect, request } from './socket.js';
import { live, on, session } from './state.js';
import { installAlertToasts } from './toasts.js';

const MAX_RUNNING_SHOWN = 10;
const MAX_RUNNING_KEPT = 500;
const MAX_FAILURES = 8;
const MAX_ALERTS = 6;
const RECENT_ALERTS_MS = 3_600_000; // a wallboard opened now lists the last hour's alerts
const REFETCH_MS = 60_000; // a full refetch now and then keeps days-long sessions exact
const RETRY_ME_MS = 15_000;

const $ = (id) => document.getElementById(id);
const CONNECTION_TEXT = { connecting: 'Connecting…', live: 'Live', reconnecting: 'Reconnecting…', offline: 'Offline' };

const running = new Map();
let failures = [];
const alerts = [];
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
  replace($('wb-alerts'), alerts.length ? alerts.map((alert) => el('li', { class: `wb-alert wb-alert-${alert.severity === 'critical' ? 'critical' : 'warning'}` },
    el('div', { class: 'wb-line' }, el('strong', { text: String(alert.kind || 'alert').replace('_', ' ') }),
      el('span', { class: 'wb-time', text: formatTime(alert.at) })),
    el('div', { text: String(alert.message || '') }))) : el('li', { class: 'wb-empty', text: 'No alerts.' }));
}

function scheduleRender() {
  if (!frame) frame = requestAnimationFrame(renderLists);
}

function renderClock() {
  const now = Date.now();
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
  setInterval(() => {
    if (live.state === 'live') {
      refetch();
      request('get-stats').then(renderCounts).catch(() => {});
    }
  }, REFETCH_MS);
  refetch();
}

start();
