// Formatting values for people, and the client-side mirrors of the server's parsing rules.

export const JOB_STATUSES = ['QUEUED', 'IN_PROGRESS', 'SUCCESS', 'PARTIAL', 'FAILED', 'CANCELLED'];
export const ACTIVE_STATUSES = new Set(['QUEUED', 'IN_PROGRESS']);
export const FINAL_STATUSES = new Set(['SUCCESS', 'FAILED', 'PARTIAL', 'CANCELLED']);

const STATUS_LABELS = {
  QUEUED: 'Queued', IN_PROGRESS: 'In progress', SUCCESS: 'Success', PARTIAL: 'Partial',
  FAILED: 'Failed', CANCELLED: 'Cancelled', PENDING: 'Pending', SKIPPED: 'Skipped',
};

/** A readable label for a job or customer status. */
export function statusLabel(status) {
  return STATUS_LABELS[status] || String(status || '');
}

/** The CSS class of a status badge (colour per status). */
export function badgeClass(status) {
  return `badge badge-${String(status || 'unknown').toLowerCase().replace(/[^a-z_-]/g, '')}`;
}

/** "HTTP 401 - message" for a failed or partial job: just the message without an HTTP status, or
 * when the message already names it anywhere ("All 2 customers failed: HTTP 401 from cluster ..."),
 * so the status is never said twice. */
export function failureText(job) {
  const message = job.error_message || 'failed on the cluster';
  if (!job.http_status) return message;
  const prefix = `HTTP ${job.http_status}`;
  const named = new RegExp(`(^|[^A-Za-z0-9])${prefix}([^0-9]|$)`);
  return named.test(message) ? message : `${prefix} - ${message}`;
}

/** The first 8 characters of a UUID, enough to tell jobs apart on screen. */
export function shortId(id) {
  const text = String(id || '');
  // a time-ordered (version 7) id, as pipeline jobs and deployments have, starts with the time:
  // ids of the same minute share their first characters, so it is shown by its last ones
  return text.length === 36 && text[14] === '7' ? text.slice(-8) : text.slice(0, 8);
}

const pad = (n) => String(n).padStart(2, '0');

/** An ISO timestamp as local "YYYY-MM-DD HH:MM:SS" (time only when it is today). */
export function formatTime(iso, { alwaysDate = false } = {}) {
  if (!iso) return '';
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return '';
  const time = `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
  const today = new Date();
  const sameDay = date.toDateString() === today.toDateString();
  if (sameDay && !alwaysDate) return time;
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())} ${time}`;
}

/** A duration in milliseconds as "850 ms", "4.2 s", "3 min 05 s", "2 h 10 min". */
export function formatDuration(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return '';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const seconds = ms / 1000;
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes} min ${pad(Math.floor(seconds % 60))} s`;
  return `${Math.floor(minutes / 60)} h ${pad(minutes % 60)} min`;
}

/** How long ago a moment (epoch ms) was, in words: "4 s", "2 min", "3 h". */
export function formatAge(sinceMs, now = Date.now()) {
  const seconds = Math.max(0, Math.round((now - sinceMs) / 1000));
  if (seconds < 60) return `${seconds} s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ${pad(seconds % 60)} s`;
  return `${Math.floor(seconds / 3600)} h ${pad(Math.floor((seconds % 3600) / 60))} min`;
}

/** A count with thousands separators. */
export function formatCount(n) {
  return n === null || n === undefined ? '–' : Number(n).toLocaleString('en-US');
}

/** A percentage, or a dash when there is nothing to divide. */
export function formatPercent(value) {
  return value === null || value === undefined ? '–' : `${Number(value).toFixed(1)} %`;
}

/** "done / total" progress of a job, with the failures. */
export function progressText(job) {
  const text = `${formatCount(job.done)} / ${formatCount(job.customer_count)}`;
  return job.failed ? `${text} (${formatCount(job.failed)} failed)` : text;
}

// -- pipeline jobs and deployments (reported by CI/CD agents)

export const PIPELINE_STATUSES = ['pending', 'queued', 'running', 'success', 'failed', 'cancelled', 'timeout', 'error'];
export const PIPELINE_ACTIVE = new Set(['pending', 'queued', 'running']);
export const DEPLOYMENT_STATUSES = ['pending', 'staging', 'staged', 'production', 'live', 'failed', 'rolled_back'];

/** A pipeline job's or deployment's status as a badge text: "rolled_back" → "ROLLED BACK". */
export function recordStatusText(status) {
  return String(status || '').replace(/_/g, ' ').toUpperCase();
}

/** The CSS class of a pipeline job's or deployment's status badge (prefixed: their statuses overlap
 * with the Set Action ones but not their colours). */
export function recordBadgeClass(status) {
  return `badge badge-rec badge-rec-${String(status || 'unknown').toLowerCase().replace(/[^a-z_-]/g, '')}`;
}

/** A link target for a URL from an agent: http(s) only (never javascript:, data:, ...), else null. */
export function safeHttpUrl(text) {
  if (typeof text !== 'string' || !text) return null;
  try {
    const url = new URL(text);
    return url.protocol === 'http:' || url.protocol === 'https:' ? url.href : null;
  } catch {
    return null;
  }
}

/** The first 7 characters of a commit SHA. */
export function shortSha(sha) {
  return String(sha || '').slice(0, 7);
}

/** The first line of a commit message, cut to `max` characters. */
export function firstLine(text, max = 80) {
  const line = String(text || '').split(/\r?\n/, 1)[0].trim();
  return line.length > max ? `${line.slice(0, max - 1)}…` : line;
}

/** Seconds (a pipeline job's duration_seconds) as "850 ms", "4.2 s", "3 min 05 s". */
export function formatSeconds(seconds) {
  return seconds === null || seconds === undefined ? '' : formatDuration(Number(seconds) * 1000);
}

/** Whether an ISO time falls on today's local date. */
export function isToday(iso, now = new Date()) {
  if (!iso) return false;
  const date = new Date(iso);
  return !Number.isNaN(date.getTime()) && date.toDateString() === now.toDateString();
}

// -- CIDs: the same rules as server/actions.py, so the confirmation shows the count the server will use

export const CID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$/;
// the same list as CSV_CID_HEADERS in server/actions.py
const CID_HEADERS = new Set([
  'cid', 'cids', 'customer_id', 'customer_ids', 'customer', 'customers', 'customerid', 'customer id',
  'account', 'accounts', 'account_id', 'accountid', 'account id', 'id',
]);

/** {cids, invalid} from values: trimmed, validated, de-duplicated in order. */
export function cleanCids(values) {
  const seen = new Set();
  const cids = [];
  const invalid = [];
  for (const raw of values) {
    const cid = String(raw).trim();
    if (!CID_PATTERN.test(cid)) {
      invalid.push(cid.slice(0, 40));
    } else if (!seen.has(cid)) {
      seen.add(cid);
      cids.push(cid);
    }
  }
  return { cids, invalid };
}

/** CIDs typed by hand: one per line, or separated by commas, semicolons or spaces. */
export function parseCidText(text) {
  return cleanCids(String(text).split(/[\s,;]+/).filter(Boolean));
}

/** Rows of a CSV text (RFC 4180 quoting). */
export function parseCsv(text) {
  const rows = [];
  let row = [];
  let cell = '';
  let quoted = false;
  for (let i = 0; i < text.length; i += 1) {
    const ch = text[i];
    if (quoted) {
      if (ch === '"' && text[i + 1] === '"') { cell += '"'; i += 1; }
      else if (ch === '"') quoted = false;
      else cell += ch;
    } else if (ch === '"') quoted = true;
    else if (ch === ',') { row.push(cell); cell = ''; }
    else if (ch === '\n' || ch === '\r') {
      if (ch === '\r' && text[i + 1] === '\n') i += 1;
      row.push(cell); rows.push(row); row = []; cell = '';
    } else cell += ch;
  }
  if (cell !== '' || row.length) { row.push(cell); rows.push(row); }
  return rows;
}

/** CIDs of an uploaded CSV: the column headed cid/customer_id, else the first column. */
export function parseCidCsv(text) {
  let rows = parseCsv(text.replace(/^\uFEFF/, '')).filter((row) => row.some((cell) => cell.trim()));
  if (!rows.length) return { cids: [], invalid: [] };
  let column = 0;
  const header = rows[0].map((cell) => cell.trim().toLowerCase());
  const found = header.findIndex((name) => CID_HEADERS.has(name));
  if (found >= 0) {
    column = found;
    rows = rows.slice(1);
  }
  return cleanCids(rows.map((row) => (column < row.length ? row[column] : '')));
}

// -- CSV export

/** One CSV cell: quoted when needed, and defused when a spreadsheet would run it as a formula. */
export function csvCell(value) {
  let text = value === null || value === undefined ? '' : String(value);
  if (/^[=+\-@\t\r]/.test(text)) text = `'${text}`;
  return /[",\r\n]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}

/** A CSV document from a header and rows of values. */
export function toCsv(header, rows) {
  return [header, ...rows].map((row) => row.map(csvCell).join(',')).join('\r\n') + '\r\n';
}

/** A file-name friendly local timestamp. */
export function fileStamp(date = new Date()) {
  return `${date.getFullYear()}${pad(date.getMonth() + 1)}${pad(date.getDate())}-`
    + `${pad(date.getHours())}${pad(date.getMinutes())}${pad(date.getSeconds())}`;
}

/** A random key for Idempotency-Key (crypto.randomUUID needs a secure context; this does not). */
export function randomKey() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}
