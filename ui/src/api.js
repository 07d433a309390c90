// Thin fetch wrapper for the controller's JSON API.
//
// Why a wrapper: every request from the dashboard must carry the session
// cookie (credentials 'same-origin') and the X-Requested-With header (the
// server refuses cookie-authenticated non-GET requests without it, a CSRF
// guard), a 401 anywhere means the session is gone and the user belongs on
// the login page, and every error body is an ApiError
// ({code, title, message, problems}) that the page shows verbatim. Doing
// that in one place keeps the callers to one line each.

/** An ApiError answer from the server (or a network failure, code 0). */
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

/**
 * Calls the API. Resolves to the parsed JSON body (or null when the answer
 * has none), rejects with an ApiError. A 401 also navigates to the login page.
 */
export async function api(method, path, body) {
  const headers = { 'X-Requested-With': 'apiary-ui', Accept: 'application/json' };
  const init = { method, headers, credentials: 'same-origin', cache: 'no-store' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, 'Network error', `${method} ${path}: ${e.message}`);
  }
  const text = await res.text();
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
