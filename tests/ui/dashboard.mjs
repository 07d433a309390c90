#!/usr/bin/env node
// Browser test of the Apiary web dashboard (ui/), driven by Playwright.
//
//   node tests/ui/dashboard.mjs --url http://127.0.0.1:PORT --token TOKEN \
//       --screenshots DIR [--name INSTANCE-NAME] [--console] [--chromium /usr/bin/chromium]
//       [--timeout-ms 30000] [--deadline-ms 270000]
//
// --name names the instance the script creates (default ui-<random>), so the
// caller can look it up afterwards. --timeout-ms bounds each wait,
// --deadline-ms the whole run.
//
// A C++ Boost.Test wrapper starts a cluster (controller + two nodes) and runs
// this script against it; the script only talks to the controller through a
// headless Chromium, the way a user would. Each step prints
// "step: <name> ok", or "step: <name> FAILED: <why>", saves failure.png and
// exits 1. Every wait has a timeout and the whole run has a deadline, so a
// hung dashboard fails the test instead of hanging it.
//
// playwright-core comes from ui/node_modules (npm install in ui/); the
// browser is the system's Chromium, so nothing is downloaded at test time.

import { createRequire } from 'node:module';
import { mkdirSync } from 'node:fs';
import path from 'node:path';

// --- arguments ------------------------------------------------------------------

function parseArgs(argv) {
  const opts = { chromium: '/usr/bin/chromium', timeoutMs: 30_000, console: false, screenshots: '.' };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
      return argv[++i];
    };
    if (a === '--url') opts.url = value().replace(/\/+$/, '');
    else if (a === '--token') opts.token = value();
    else if (a === '--screenshots') opts.screenshots = value();
    else if (a === '--chromium') opts.chromium = value();
    else if (a === '--timeout-ms') opts.timeoutMs = Number(value());
    else if (a === '--name') opts.name = value();
    else if (a === '--deadline-ms') opts.deadlineMs = Number(value());
    else if (a === '--console') opts.console = true;
    else throw new Error(`unknown argument ${a}`);
  }
  if (!opts.url || !opts.token) throw new Error('--url and --token are required');
  if (!(opts.timeoutMs > 0)) throw new Error('--timeout-ms must be a positive number');
  return opts;
}

let opts;
try {
  opts = parseArgs(process.argv.slice(2));
} catch (err) {
  console.error(`usage error: ${err.message}`);
  process.exit(2);
}
mkdirSync(opts.screenshots, { recursive: true });

const require = createRequire(new URL('../../ui/package.json', import.meta.url));
const { chromium } = require('playwright-core');

const T = opts.timeoutMs;
const shot = (name) => path.join(opts.screenshots, name);

// --- harness ----------------------------------------------------------------------

/** Resolves like `promise`, or rejects once `ms` have passed. */
function within(ms, promise) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

let browser = null;
let page = null;

let failing = false;

async function fail(name, why) {
  if (failing) process.exit(1);  // the deadline fired while reporting a failure
  failing = true;
  console.log(`step: ${name} FAILED: ${why}`);
  if (page) {
    try {
      await page.screenshot({ path: shot('failure.png'), fullPage: true, timeout: 10_000 });
      console.error(`page url at failure: ${page.url()}`);
      // Whatever the page was telling the user at the time.
      const shown = await within(5_000, page.evaluate(() =>
        ['#login-error', '#load-error', '#create-error', '#action-error', '#console-status']
          .map((sel) => [sel, document.querySelector(sel)])
          .filter(([, e]) => e && !e.hidden && e.textContent.trim())
          .map(([sel, e]) => `${sel}: ${e.textContent.trim()}`)));
      for (const line of shown) console.error(`page shows ${line}`);
    } catch (err) {
      console.error(`no failure screenshot: ${err.message}`);
    }
  }
  if (browser) await within(10_000, browser.close()).catch(() => {});
  process.exit(1);
}

// The whole run is bounded: by --deadline-ms, or a multiple of one wait
// capped below the C++ wrapper's 300 s so that this script reports first.
const totalMs = opts.deadlineMs || Math.min(T * 12, 270_000);
let current = 'start';
const deadline = setTimeout(() => {
  fail(current, `the test did not finish within ${Math.round(totalMs / 1000)} s`);
}, totalMs);

async function step(name, fn) {
  current = name;
  const t0 = Date.now();
  try {
    await fn();
  } catch (err) {
    await fail(name, (err && err.message ? err.message : String(err)).split('\n')[0]);
  }
  console.log(`step: ${name} ok`);
  console.error(`(${name} took ${((Date.now() - t0) / 1000).toFixed(1)} s)`);
}

function check(cond, message) {
  if (!cond) throw new Error(message);
}

/** Waits until fn(arg) is truthy in the page; `what` names it in the error. */
async function until(what, fn, arg) {
  try {
    return await (await page.waitForFunction(fn, arg, { timeout: T, polling: 100 })).jsonValue();
  } catch (err) {
    throw new Error(`timed out after ${T} ms waiting for ${what}`);
  }
}

/** Is the instance's row showing vm_state a.state? (a = {id, state}) */
const rowIs = (a) => {
  const row = document.querySelector(`#instances tr[data-instance="${CSS.escape(a.id)}"]`);
  const cell = row && row.querySelector('.vm-state');
  return !!cell && cell.textContent.trim() === a.state;
};

/**
 * Does the console's xterm buffer contain `needle`? (window.__term is set
 * by ui/src/console.js.)
 */
const terminalContains = (needle) => {
  const term = window.__term;
  if (!term) return false;
  const buf = term.buffer.active;
  const lines = [];
  for (let i = 0; i < buf.length; i++) {
    const line = buf.getLine(i);
    if (line) lines.push(line.translateToString(true));
  }
  return lines.join('\n').includes(needle);
};

// --- the run ----------------------------------------------------------------------

try {
  browser = await chromium.launch({
    executablePath: opts.chromium,
    headless: true,
    args: ['--no-sandbox'],
    timeout: T,
  });
  const context = await browser.newContext({ viewport: { width: 1400, height: 1000 } });
  page = await context.newPage();
} catch (err) {
  await fail('launch', `cannot start ${opts.chromium}: ${err.message.split('\n')[0]}`);
}
page.setDefaultTimeout(T);
page.on('console', (msg) => {
  if (msg.type() === 'error' || msg.type() === 'warning') console.error(`browser ${msg.type()}: ${msg.text()}`);
});
page.on('pageerror', (err) => console.error(`browser page error: ${err.message}`));
page.on('dialog', (dialog) => dialog.accept());  // the Delete confirmation

let instanceId = null;

await step('wrong_token_refused', async () => {
  await page.goto(`${opts.url}/ui/`, { timeout: T });
  check(new URL(page.url()).pathname === '/ui/login', `GET /ui/ without a session ended on ${page.url()}`);
  await page.fill('#token', `${opts.token}-wrong`);
  await page.click('#sign-in');
  const text = await until('#login-error to show a refusal', () => {
    const box = document.querySelector('#login-error');
    return box && !box.hidden && /401|Refused/.test(box.textContent) ? box.textContent : null;
  });
  check(new URL(page.url()).pathname === '/ui/login', `left the login page after a wrong token: ${page.url()}`);
  const res = await fetch(`${opts.url}/v1/instances`, { signal: AbortSignal.timeout(T) });
  check(res.status === 401, `GET /v1/instances without credentials answered ${res.status}, not 401`);
  await page.screenshot({ path: shot('login.png') });
  console.error(`login error shown: ${text}`);
});

await step('login', async () => {
  await page.fill('#token', opts.token);
  await Promise.all([
    page.waitForURL((u) => u.pathname === '/ui/', { timeout: T }),
    page.click('#sign-in'),
  ]);
  await until('the dashboard to load its nodes', () => document.querySelectorAll('#nodes tr[data-node]').length > 0);
});

await step('both_nodes', async () => {
  await until('node-1 and node-2 in state created', () => ['node-1', 'node-2'].every((name) => {
    const row = document.querySelector(`#nodes tr[data-node="${name}"]`);
    return row && row.querySelector('.state').textContent.trim() === 'created';
  }));
  await until('the live indicator', () => document.querySelector('#live').classList.contains('on'));
  await page.screenshot({ path: shot('overview.png'), fullPage: true });
});

await step('create_reaches_active', async () => {
  await page.evaluate(() => { window.__noReload = 1; });
  const name = opts.name || `ui-${Math.random().toString(36).slice(2, 8)}`;
  await page.fill('#create-form input[name="name"]', name);
  await page.fill('#create-form [name="guest"]', 'demo');
  await page.fill('#create-form input[name="vcpus"]', '1');
  await page.fill('#create-form input[name="memory_mib"]', '64');
  await page.click('#create-form button[type="submit"]');
  instanceId = await until(`a row for ${name}`, (n) => {
    const row = [...document.querySelectorAll('#instances tr[data-instance]')]
      .find((r) => r.querySelector('.name') && r.querySelector('.name').textContent === n);
    return row ? row.dataset.instance : null;
  }, name);
  console.error(`created ${name} as ${instanceId}`);
  await until(`${instanceId} to reach vm_state active`, rowIs, { id: instanceId, state: 'active' });
  check(await page.evaluate(() => window.__noReload === 1), 'the page was reloaded (window.__noReload is gone)');
  // The update came over the event stream: a `change` named the instance
  // (window.__events is kept by ui/src/app.js).
  const events = await page.evaluate(() => window.__events);
  check(events && Array.isArray(events.instances), 'the page keeps no window.__events');
  check(events.instances.includes(instanceId),
        `no change event named ${instanceId} (${events.change} change events, for ${events.instances.join(' ') || 'nothing'})`);
});

/**
 * How the graph of machine `name` (its svg's data-machine) is highlighted:
 * {current, visited: [state, …]}, or null when it is not drawn.
 */
const graphMarks = (name) => {
  const svg = document.querySelector(`svg[data-machine="${CSS.escape(name)}"]`);
  if (!svg) return null;
  const cur = svg.querySelector('g.state.current');
  return {
    current: cur ? cur.dataset.state : null,
    visited: [...svg.querySelectorAll('g.state.visited')].map((g) => g.dataset.state),
  };
};

/** Checks that the page had exactly one `hello` (one per page load: the stream never reconnected). */
async function checkOneHello(when) {
  const hellos = await page.evaluate(() => (window.__events ? window.__events.hello : undefined));
  check(hellos === 1, `${when}: window.__events.hello is ${hellos}, not 1 (the event stream reconnected?)`);
}

const novaCurrent = () => {
  const g = document.querySelector('svg[data-machine="nova"] g.state.current');
  return g ? g.dataset.state : null;
};

await step('pause_moves_graph', async () => {
  await page.click(`#instances tr[data-instance="${instanceId}"]`);
  const current = await until('the Nova graph to mark a current state', novaCurrent);
  check(current === 'active', `the Nova graph's current state is ${current}, not active`);
  await page.click('#instance-detail button[data-action="pause"]');
  await until('the row to show paused', rowIs, { id: instanceId, state: 'paused' });
  await until('the Nova graph to move to paused with active visited', () => {
    const svg = document.querySelector('svg[data-machine="nova"]');
    const cur = svg && svg.querySelector('g.state.current');
    const active = svg && svg.querySelector('g.state[data-state="active"]');
    return cur && cur.dataset.state === 'paused' && active && active.classList.contains('visited');
  });
  await page.screenshot({ path: shot('instance.png'), fullPage: true });
});

await step('refused_action_shows_409', async () => {
  await page.click('#instance-detail button[data-action="pause"]');
  const text = await until("#action-error to show Nova's refusal", () => {
    const box = document.querySelector('#action-error');
    if (!box || box.hidden || box.offsetParent === null) return null;
    const t = box.textContent;
    return t.includes("Cannot 'pause' instance") && /409|Conflict/.test(t) ? t : null;
  });
  console.error(`refusal shown: ${text}`);
  await page.click('#instance-detail button[data-action="unpause"]');
  await until('the row to show active again', rowIs, { id: instanceId, state: 'active' });
});

// The graphs' history comes from the server (the *_history fields), so a
// fresh page shows where the instance has been: paused, and in Propolis'
// lifecycle quiesce, before it became active / run again.
await step('history_survives_reload', async () => {
  await page.reload({ timeout: T });
  // A new document: mark it, as create_reaches_active marked the first one,
  // so that a check of window.__noReload after this step stays meaningful.
  await page.evaluate(() => { window.__noReload = 1; });
  const row = `#instances tr[data-instance="${instanceId}"]`;
  await until(`the row of ${instanceId} after the reload`, rowIs, { id: instanceId, state: 'active' });
  await page.click(row);
  const want = {
    nova: { current: 'active', visited: 'paused' },
    propolis: { current: 'run', visited: 'quiesce' },
  };
  const shows = (w) => Object.entries(w).every(([name, m]) => {
    const svg = document.querySelector(`svg[data-machine="${name}"]`);
    const cur = svg && svg.querySelector('g.state.current');
    const old = svg && svg.querySelector(`g.state[data-state="${m.visited}"]`);
    return !!cur && cur.dataset.state === m.current && !!old && old.classList.contains('visited');
  });
  try {
    await until('the graphs to show the history from before the reload', shows, want);
  } catch (err) {
    // Say what the graphs do show.
    const seen = {};
    for (const name of Object.keys(want)) seen[name] = await page.evaluate(graphMarks, name);
    throw new Error(`${err.message}; the graphs show ${JSON.stringify(seen)}`);
  }
  await checkOneHello('after the reload');
});

if (opts.console) {
  await step('console_answers', async () => {
    const status = await page.textContent('#console-status');
    if (!/^connect/.test(status.trim())) await page.click('#console-connect');
    await until('the guest prompt "apiary>" in the console', terminalContains, 'apiary>');
    await page.evaluate(() => window.__term.focus());
    await page.keyboard.type('info');
    await page.keyboard.press('Enter');
    await until('"vcpus: 1" in the console', terminalContains, 'vcpus: 1');
    await page.screenshot({ path: shot('console.png'), fullPage: true });
  });
}

await step('delete', async () => {
  // Since the reload the stream has been up all along: still one hello.
  await checkOneHello('before delete');
  await page.click('#instance-detail button[data-action="delete"]');
  await until(`${instanceId} to disappear or show deleted`, (a) => {
    const row = document.querySelector(`#instances tr[data-instance="${CSS.escape(a.id)}"]`);
    return !row || row.querySelector('.vm-state').textContent.trim() === 'deleted';
  }, { id: instanceId });
});

clearTimeout(deadline);
await browser.close();
console.log('all steps ok');
