// What the page knows: the session, the live connection, the latest version of each job seen,
// and a small event bus that the socket and the views talk through.

import { FINAL_STATUSES } from './format.js';

const bus = new EventTarget();

/** Listen to a bus topic; returns the function that stops listening. */
export function on(topic, handler) {
  const listener = (event) => handler(event.detail);
  bus.addEventListener(topic, listener);
  return () => bus.removeEventListener(topic, listener);
}

/** Publish on a bus topic: 'job', 'pipeline', 'deployment', 'summary', 'stats', 'alert', 'appstatus',
 * 'resync', 'connection', 'session'. */
export function publish(topic, detail) {
  bus.dispatchEvent(new CustomEvent(topic, { detail }));
}

/** The logged-in user and the CSRF token of the cookie session. */
export const session = { user: null, csrf: null };

/** The live connection: its state, the last job event id seen, and when data last arrived. */
export const live = {
  state: 'connecting', // connecting | live | reconnecting | offline
  reason: '',
  lastEventId: 0,
  lastDataAt: 0,
  connectedAt: 0,
  disconnectedAt: 0,
};

const MAX_JOBS = 5000; // cap on remembered jobs: a page left open for weeks must not grow forever
const jobs = new Map();

/** The latest version of a job seen by this page, if any. */
export function knownJob(jobId) {
  return jobs.get(jobId);
}

const STATUS_RANK = { QUEUED: 0, IN_PROGRESS: 1, SUCCESS: 2, FAILED: 2, PARTIAL: 2, CANCELLED: 2 };

/** True when `candidate` is not older than `current` (so it may replace it on screen). */
export function isNewer(candidate, current) {
  if (!current) return true;
  if (FINAL_STATUSES.has(current.status) && !FINAL_STATUSES.has(candidate.status)) return false;
  const a = Date.parse(candidate.updated_at) || 0;
  const b = Date.parse(current.updated_at) || 0;
  if (a !== b) return a > b;
  if ((STATUS_RANK[candidate.status] ?? 0) !== (STATUS_RANK[current.status] ?? 0)) {
    return (STATUS_RANK[candidate.status] ?? 0) > (STATUS_RANK[current.status] ?? 0);
  }
  return (candidate.done + candidate.failed) >= (current.done + current.failed);
}

/** Remember a job version from a REST answer or an event; true when it is news. */
export function rememberJob(job) {
  const current = jobs.get(job.job_id);
  if (!isNewer(job, current)) return false;
  jobs.delete(job.job_id);
  jobs.set(job.job_id, job);
  if (jobs.size > MAX_JOBS) jobs.delete(jobs.keys().next().value);
  return true;
}

// Pipeline jobs and deployments (reported by CI/CD agents): the latest version of each seen, so a
// REST page fetched while events arrive never shows an older version over a newer one.
const FINAL_RECORD_STATUSES = {
  pipeline: new Set(['success', 'failed', 'cancelled', 'timeout', 'error']),
  deployment: new Set(['failed', 'rolled_back']),
};
const RECORD_KEYS = { pipeline: 'job_id', deployment: 'id' };
const records = { pipeline: new Map(), deployment: new Map() };

/** The latest version of a pipeline job ('pipeline', job_id) or deployment ('deployment', id) seen. */
export function knownRecord(kind, id) {
  return records[kind].get(id);
}

/** Remember a pipeline job or deployment from a REST answer or an event; true when it is news. */
export function rememberRecord(kind, record) {
  const map = records[kind];
  const id = record[RECORD_KEYS[kind]];
  const current = map.get(id);
  if (current) {
    const final = FINAL_RECORD_STATUSES[kind];
    if (final.has(current.status) && !final.has(record.status)) return false;
    const a = Date.parse(record.updated_at) || 0;
    const b = Date.parse(current.updated_at) || 0;
    if (a < b) return false;
  }
  map.delete(id);
  map.set(id, record);
  if (map.size > MAX_JOBS) map.delete(map.keys().next().value);
  return true;
}

/** The last `dashboard-summary` (pipeline and deployment figures, what is live per service). */
export const dashboard = { summary: null };

/** Keep a summary (pushed or fetched) unless a newer one is known; true when it is kept. */
export function rememberSummary(summary) {
  if (!summary || typeof summary !== 'object') return false;
  const current = dashboard.summary;
  if (current && String(summary.as_of || '') < String(current.as_of || '')) return false;
  dashboard.summary = summary;
  return true;
}

/** Forget everything about the last user (on logout). */
export function resetState() {
  jobs.clear();
  records.pipeline.clear();
  records.deployment.clear();
  dashboard.summary = null;
  session.user = null;
  session.csrf = null;
  live.lastEventId = 0;
  live.lastDataAt = 0;
}
