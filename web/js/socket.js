// The live connection: Socket.IO on the same origin, its state (live / reconnecting / offline),
// resuming from the last event id after a reconnect, and job (and dashboard) subscriptions that
// survive it.

import { io } from '/web/vendor/socket.io-client/socket.io.esm.min.js';
import {
  live, publish, rememberJob, knownJob, rememberRecord, knownRecord, rememberSummary, session,
} from './state.js';

const OFFLINE_AFTER_MS = 15_000; // still retrying, but say "offline" after this long without a server
const REFUSED_RETRY_MS = 20_000; // a refused connection is tried again after this long (wallboards)
const ACK_TIMEOUT_MS = 10_000;
const ALERT_MARGIN_MS = 5_000; // clocks and in-flight emits: ask for alerts a little before the drop

let socket = null;
let options = {};
let everConnected = false;
let refusedTimer = null;
let ticker = null;
let fetchingEarlierAlerts = false;
const subscriptions = new Set();
let dashboardWanted = false; // asked for `dashboard-summary`: asked again after every reconnect

function setState(state, reason = '') {
  if (state === live.state && reason === live.reason) return;
  const wasLive = live.state === 'live';
  live.state = state;
  live.reason = reason;
  if (state === 'live') {
    live.connectedAt = Date.now();
    live.disconnectedAt = 0;
  } else if (wasLive || !live.disconnectedAt) {
    live.disconnectedAt = Date.now();
  }
  publish('connection', { state, reason });
}

function onTick() {
  const down = live.state === 'reconnecting' || live.state === 'connecting';
  if (down && ((live.disconnectedAt && Date.now() - live.disconnectedAt > OFFLINE_AFTER_MS) || !navigator.onLine)) {
    setState('offline', navigator.onLine ? 'The server has not answered for a while; still trying'
      : 'This computer is offline');
  }
  publish('tick', Date.now());
}

/** What a refused connection says: {code, message} (python-socketio sends a repr of a dict). */
export function refusalOf(error) {
  const raw = String((error && error.message) || 'Connection refused');
  let code = 'refused';
  let message = raw;
  const data = error && error.data;
  if (data && typeof data === 'object') {
    return { code: data.code || code, message: data.message || raw };
  }
  try {
    const parsed = JSON.parse(raw);
    if (parsed && typeof parsed === 'object') return { code: parsed.code || code, message: parsed.message || raw };
  } catch { /* not JSON: try the Python form below */ }
  const codeMatch = raw.match(/['"]code['"]:\s*['"]([^'"]*)['"]/);
  const messageMatch = raw.match(/['"]message['"]:\s*(['"])(.*?)\1\s*[,}]/);
  if (codeMatch) code = codeMatch[1];
  if (messageMatch) message = messageMatch[2];
  return { code, message };
}

/** Note an event about one of the user's records: its id is the resume point (ids count per user,
 * over job-update, pipeline-update and deployment-update alike, so only our own records' ids count;
 * an admin also receives everyone's). */
function advanceEventId(payload, record) {
  const own = !session.user || record.user_id === session.user.id;
  if (own && Number.isInteger(payload.event_id) && payload.event_id > live.lastEventId) {
    live.lastEventId = payload.event_id;
  }
  live.lastDataAt = Date.now();
}

// Server events: the same functions run for live events and for test-injected ones (dispatch).
const handlers = {
  'job-update'(payload) {
    if (!payload || !payload.job) return;
    const job = payload.job;
    advanceEventId(payload, job);
    if (rememberJob(job)) publish('job', { job: knownJob(job.job_id), kind: payload.kind, eventId: payload.event_id });
  },
  'pipeline-update'(payload) {
    if (!payload || !payload.job || typeof payload.job.job_id !== 'string') return;
    const job = payload.job;
    advanceEventId(payload, job);
    if (rememberRecord('pipeline', job)) {
      publish('pipeline', { job: knownRecord('pipeline', job.job_id), kind: payload.kind, eventId: payload.event_id });
    }
  },
  'deployment-update'(payload) {
    if (!payload || !payload.deployment || typeof payload.deployment.id !== 'string') return;
    const deployment = payload.deployment;
    advanceEventId(payload, deployment);
    if (rememberRecord('deployment', deployment)) {
      publish('deployment', { deployment: knownRecord('deployment', deployment.id), kind: payload.kind,
        eventId: payload.event_id });
    }
  },
  'dashboard-summary'(payload) {
    if (!rememberSummary(payload)) return;
    live.lastDataAt = Date.now();
    publish('summary', payload);
  },
  'job-stats'(payload) {
    live.lastDataAt = Date.now();
    publish('stats', payload);
  },
  'job-alert'(payload) {
    publish('alert', fetchingEarlierAlerts && payload ? { ...payload, earlier: true } : payload);
  },
  'appstatus-update'(payload) {
    live.lastDataAt = Date.now();
    publish('appstatus', payload);
  },
  resync(payload) {
    publish('resync', { reason: (payload && payload.reason) || 'server asked' });
  },
};

/** Handle a server event as if it had arrived on the socket (used by the browser tests). */
export function dispatch(event, payload) {
  const handler = handlers[event];
  if (handler) handler(payload);
}

async function afterConnect(first, downSince) {
  for (const jobId of subscriptions) socket.emit('subscribe', { job_id: jobId });
  if (dashboardWanted) askForDashboard();
  request('get-stats').then((stats) => handlers['job-stats'](stats)).catch(() => {});
  if (!first) publish('reconnected', {});
  if (options.resume && live.lastEventId > 0) {
    try {
      const resume = { last_event_id: live.lastEventId };
      // alerts raised while we were away come back too (toasts drop the ones already shown)
      if (downSince) resume.alerts_since = new Date(downSince - ALERT_MARGIN_MS).toISOString();
      const ack = await request('resume', resume);
      if (ack && ack.error) publish('resync', { reason: ack.error.message || 'resume refused' });
      // {recovered: false} comes with a `resync` event of its own
    } catch {
      publish('resync', { reason: 'resume timed out' });
    }
  } else {
    // nothing to resume from: data loaded before this connection may have missed events
    publish('resync', { reason: first ? 'connected' : 'reconnected', connectedAt: live.connectedAt });
    if (first && options.recentAlertsMs) {
      // a page opened after an alert still shows it: ask for the alerts of the last while
      const since = new Date(Date.now() - options.recentAlertsMs).toISOString();
      fetchingEarlierAlerts = true; // they arrive before the ack
      request('resume', { alerts_since: since }).catch(() => {}).finally(() => { fetchingEarlierAlerts = false; });
    }
  }
}

/**
 * Connect (again). token: an API token for `auth` (wallboards); resume: replay missed job events
 * after a reconnect; recentAlertsMs: on the first connect, also receive the alerts raised in the
 * last this many ms; onRefused({code, message}) → true to keep retrying.
 */
export function connect({ token = null, resume = true, recentAlertsMs = 0, onRefused = null } = {}) {
  disconnect();
  options = { token, resume, recentAlertsMs, onRefused };
  everConnected = false;
  live.disconnectedAt = 0;
  setState('connecting');
  socket = io({
    path: '/socket.io/',
    auth: token ? { token } : {},
    reconnection: true,
    reconnectionAttempts: Infinity,
    reconnectionDelay: 500,
    reconnectionDelayMax: 5000,
    randomizationFactor: 0.3,
    timeout: 10_000,
  });
  for (const [event, handler] of Object.entries(handlers)) socket.on(event, handler);
  socket.on('connect', () => {
    clearTimeout(refusedTimer);
    const first = !everConnected;
    const downSince = live.disconnectedAt;
    everConnected = true;
    setState('live');
    afterConnect(first, first ? 0 : downSince);
  });
  socket.on('disconnect', (reason) => {
    if (reason === 'io client disconnect') return;
    setState('reconnecting', reason === 'io server disconnect' ? 'The server closed the connection' : 'Connection lost');
    if (reason === 'io server disconnect') retryLater(); // socket.io does not retry this one on its own
  });
  socket.on('connect_error', (error) => {
    if (socket.active) {
      // a transport error: socket.io keeps retrying with backoff
      if (live.state !== 'offline') setState(everConnected ? 'reconnecting' : 'connecting', 'Trying to reach the server');
      return;
    }
    const refusal = refusalOf(error);
    setState('offline', refusal.message);
    publish('refused', refusal);
    const again = options.onRefused ? options.onRefused(refusal) : false;
    if (again) retryLater();
  });
  window.addEventListener('online', onOnline);
  window.addEventListener('offline', onTick);
  ticker = setInterval(onTick, 1000);
  return socket;
}

function onOnline() {
  if (socket && !socket.connected) socket.connect();
}

function retryLater() {
  clearTimeout(refusedTimer);
  refusedTimer = setTimeout(() => {
    if (socket && !socket.connected) socket.connect();
  }, REFUSED_RETRY_MS);
}

/** Close the connection for good (logout). */
export function disconnect() {
  clearTimeout(refusedTimer);
  clearInterval(ticker);
  window.removeEventListener('online', onOnline);
  window.removeEventListener('offline', onTick);
  if (socket) {
    socket.removeAllListeners();
    socket.disconnect();
    socket = null;
  }
  subscriptions.clear();
  dashboardWanted = false;
}

/** Send an event and wait for its ack; rejects when not connected or on timeout. */
export function request(event, data, timeoutMs = ACK_TIMEOUT_MS) {
  if (!socket || !socket.connected) return Promise.reject(new Error('not connected'));
  return data === undefined
    ? socket.timeout(timeoutMs).emitWithAck(event)
    : socket.timeout(timeoutMs).emitWithAck(event, data);
}

/** Follow one job's room (app-status updates); kept across reconnects. */
export async function subscribeJob(jobId) {
  subscriptions.add(jobId);
  if (!socket || !socket.connected) return { pending: true };
  return request('subscribe', { job_id: jobId });
}

/** Stop following a job's room. */
export async function unsubscribeJob(jobId) {
  subscriptions.delete(jobId);
  if (!socket || !socket.connected) return { ok: true };
  return request('unsubscribe', { job_id: jobId }).catch(() => ({ ok: false }));
}

function askForDashboard() {
  return request('subscribe', { dashboard: true }).then((ack) => {
    if (ack && ack.summary) handlers['dashboard-summary'](ack.summary);
    return ack;
  }).catch(() => ({ ok: false }));
}

/** Receive `dashboard-summary` (answered at once with the current one); kept across reconnects. */
export async function subscribeDashboard() {
  dashboardWanted = true;
  if (!socket || !socket.connected) return { pending: true };
  return askForDashboard();
}

/** Whether the socket is connected now. */
export function isLive() {
  return Boolean(socket && socket.connected);
}
