// The sign-in page's script (/ui/login.js), served like /ui/login itself
// without a session.
//
// Why a file of its own: the server's Content-Security-Policy for HTML is
// script-src 'self', so the page may run only scripts it loads from the
// controller, no inline <script> and no onclick= attributes.
//
// It exchanges the token for the session cookie (POST /ui/session: 204, or
// 401 with an ApiError whose message is shown in #login-error), then opens
// the dashboard. Not built on api.js on purpose: that module sends a 401 to
// this very page, and it is not served without a session anyway.

const TIMEOUT_MS = 15_000;  // like api.js: no request may hang the form

const form = document.getElementById('login-form');
const errorBox = document.getElementById('login-error');
const button = document.getElementById('sign-in');

function showError(text) {
  errorBox.textContent = text;
  errorBox.hidden = false;
}

form.addEventListener('submit', async (ev) => {
  ev.preventDefault();
  errorBox.hidden = true;
  button.disabled = true;
  try {
    const res = await fetch('/ui/session', {
      method: 'POST',
      credentials: 'same-origin',
      headers: { 'Content-Type': 'application/json', 'X-Requested-With': 'apiary-ui' },
      body: JSON.stringify({ token: document.getElementById('token').value.trim() }),
      signal: AbortSignal.timeout(TIMEOUT_MS),
    });
    if (res.ok) {
      location.assign('/ui/');
      return;
    }
    let message = res.statusText;
    try {
      const body = await res.json();
      if (body && body.message) message = body.message;
    } catch {
      // not JSON (or cut off): keep the status text
    }
    showError(`Refused: ${message} (${res.status})`);
  } catch (err) {
    showError(err && err.name === 'TimeoutError'
      ? `The controller did not answer within ${TIMEOUT_MS / 1000} s`
      : `Cannot reach the controller: ${err.message}`);
  } finally {
    button.disabled = false;
  }
});
