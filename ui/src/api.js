// Thin fetch wrapper for the controller's JSON API.
//
// Why a wrapper: every request from the dashboard must carry the session
// cookie (credentials 'same-origin') and the X-Requested-With header (the
// server refuses cookie-authenticated non-GET requests without it, a CSRF
// guard), a 401 anywhere means the session is gone and the user belongs on
// the login page, and every error body is an ApiError
// ({code, title, message, problems}) that the page shows verbatim. Doing
// that in one place keeps the callers to one line each.
//
// Every call has a deadline (TIMEOUT_MS, AbortSignal.timeout): the page
// applies its loads through one serial queue (app.js enqueue), so a request
// the server never answers would otherwise stall every later update. A
// timeout rejects like any other failure, as ApiError(0, 'Timeout', …).

/** How long one call (answer and body) may take. */
export const TIMEOUT_MS = 15_000;

/** An ApiError answer from the server (or a network failure or timeout, code 0). */
export class ApiError extends Error {
  constructor(code, title, message, problems = []) {
    super(message);
    this.code = code;
    this.title = title;
    this.problems = problems;
  }

  /** "409 Conflict: <message>", the server's message kept verbatim. */
  toString() {
    const head = [this.code || '', this.title].filter(Boolean).join(' ');
    return head ? `${head}: ${this.message}` : this.message;
  }
}

/** Sends the user to the login page (the session cookie is missing or stale). */
export function toLogin() {
  location.assign('/ui/login');
}

/** The ApiError for a call that got no (complete) answer: timeout or network. */
function failure(method, path, err) {
  if (err && err.name === 'TimeoutError') {
    return new ApiError(0, 'Timeout', `${method} ${path}: no answer within ${TIMEOUT_MS / 1000} s`);
  }
  return new ApiError(0, 'Network error', `${method} ${path}: ${err && err.message ? err.message : err}`);
}

/**
 * Calls the API. Resolves to the parsed JSON body (or null when the answer
 * has none), rejects with an ApiError (after TIMEOUT_MS at the latest). A 401
 * also navigates to the login page.
 */
export async function api(method, path, body) {
  const headers = { 'X-Requested-With': 'apiary-ui', Accept: 'application/json' };
  const init = {
    method,
    headers,
    credentials: 'same-origin',
    cache: 'no-store',
    // Covers reading the body too: text() rejects once the signal fires.
    signal: AbortSignal.timeout(TIMEOUT_MS),
  };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let res;
  let text;
  try {
    res = await fetch(path, init);
    text = await res.text();
  } catch (e) {
    throw failure(method, path, e);
  }
  let json = null;
  if (text) {
    try {
      json = JSON.parse(text);
    } catch {
      json = null;
    }
  }
  if (res.status === 401) {
    toLogin();
  }
  if (!res.ok) {
    if (json && typeof json.message === 'string') {
      throw new ApiError(json.code || res.status, json.title || res.statusText, json.message,
                         Array.isArray(json.problems) ? json.problems : []);
    }
    throw new ApiError(res.status, res.statusText, text || `${method} ${path} failed`);
  }
  return json;
}
