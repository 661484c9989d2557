// The one fetch helper: JSON in and out, the CSRF header on cookie writes, a bearer token for the
// wallboard, and errors as ApiError carrying the server's {code, message, details}.

import { session } from './state.js';

/** An error answered by the server (or a network failure, with status 0). */
export class ApiError extends Error {
  constructor(status, code, message, details = null) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details;
  }

  /** The form field the server blamed, if any. */
  get field() {
    return this.details && typeof this.details === 'object' ? this.details.field || null : null;
  }
}

let bearerToken = null;
let onUnauthorized = null;

/** Authenticate every request with this API token instead of the session cookie (wallboard). */
export function useBearerToken(token) {
  bearerToken = token;
}

/** Called with the ApiError when a request comes back 401 (the session ended). */
export function setUnauthorizedHandler(handler) {
  onUnauthorized = handler;
}

/** Call the API; resolves to the parsed JSON body, rejects with ApiError. */
export async function api(path, { method = 'GET', json, form, headers = {}, signal } = {}) {
  const sent = { Accept: 'application/json', ...headers };
  let body;
  if (json !== undefined) {
    body = JSON.stringify(json);
    sent['Content-Type'] = 'application/json';
  } else if (form !== undefined) {
    body = form; // FormData: the browser sets the multipart boundary
  }
  if (bearerToken) sent.Authorization = `Bearer ${bearerToken}`;
  else if (method !== 'GET' && session.csrf) sent['X-CSRF-Token'] = session.csrf;
  let response;
  try {
    response = await fetch(path, {
      method, headers: sent, body, signal, cache: 'no-store',
      // a token-authenticated page must not also send a cookie it may have
      credentials: bearerToken ? 'omit' : 'same-origin',
    });
  } catch (error) {
    if (error.name === 'AbortError') throw error;
    throw new ApiError(0, 'network_error', 'The server cannot be reached; is it running?');
  }
  const text = await response.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (!response.ok) {
    const err = data && data.error ? data.error : {};
    const error = new ApiError(response.status, err.code || `http_${response.status}`,
      err.message || `HTTP ${response.status} ${response.statusText}`, err.details ?? null);
    if (response.status === 401 && onUnauthorized && !path.startsWith('/api/auth/login')) onUnauthorized(error);
    throw error;
  }
  return data;
}

/** A query string from an object, leaving out empty values. */
export function query(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value === null || value === undefined || value === '' || (Array.isArray(value) && !value.length)) continue;
    search.set(key, Array.isArray(value) ? value.join(',') : String(value));
  }
  const text = search.toString();
  return text ? `?${text}` : '';
}

let clustersPromise = null;

/** GET /api/clusters, fetched once per page. */
export function clustersAndActions() {
  if (!clustersPromise) {
    clustersPromise = api('/api/clusters').catch((error) => {
      clustersPromise = null;
      throw error;
    });
  }
  return clustersPromise;
}
