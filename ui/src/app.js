// Apiary dashboard: the page logic behind /ui/.
//
// Data flow, and why: the page keeps a client-side copy of the nodes,
// instances and networks (plain Maps below) and renders the tables from it.
// The copy is loaded once and then kept current by the server's event
// stream (/v1/events): `hello` (on every (re)connect) reloads everything,
// `change` names the records that changed and exactly those are re-fetched.
// The dashboard never polls the API; the only timer is the one that ticks
// the nodes' check-in age locally between updates (display only).
//
// All fetches go through a single promise chain (enqueue) so that answers
// are applied in the order the requests were made: a full reload started
// before a change can never overwrite the newer record with an older one.
// Every call has a deadline (api.js, 15 s), so a request the server never
// answers fails the one load and cannot stall the queue behind it.
//
// History for the state graphs: the server sends it with each record
// (Instance vm_state_history / record_state_history / lifecycle_history,
// Node and Network history: the distinct states the controller has seen
// the record in, oldest first, current last), so it survives a page
// reload. Every graph also merges the states this page has itself seen
// the record in since it loaded (observed, recorded whenever a record
// arrives), which covers a server without those fields and a controller
// restart (its histories start again from the current state). Only when
// the server sends no vm_state history does the Nova graph fall back to
// replaying the action log over the machine (graph.js walkActions).

import { api, ApiError, toLogin } from '/ui/api.js';
import { ConsoleView } from '/ui/console.js';
import { StateGraph, walkActions, addHistory } from '/ui/graph.js';

// --- client-side state --------------------------------------------------------

const nodes = new Map();      // name -> node JSON (+ _age0 / _t0 for the age ticker)
const instances = new Map();  // id -> instance JSON
const networks = new Map();   // id -> network JSON
const machines = [];          // /v1/state-machines "machines"
const observed = new Map();   // "kind:id:field" -> [state, …] as seen since page load

let selectedInstance = null;  // instance id shown in #instance-detail
let actionLog = [];           // its /actions answer, oldest first
let selectedNode = null;      // node name shown in the node graph
let selectedNetwork = null;   // network id shown in the network graph
let justCreated = null;       // id named in #create-notice until it leaves `building`

const graphs = { instance: [], node: null, network: null };  // StateGraph objects

// What the event stream delivered since this page loaded, for the browser
// test (tests/ui/dashboard.mjs): a `hello` per (re)connect, a `change` per
// store commit, and every instance id a change named (not deduplicated;
// capped so that a page left open for weeks does not grow without bound).
const EVENT_IDS_MAX = 10_000;
window.__events = { hello: 0, change: 0, instances: [] };

const $ = (sel, root = document) => root.querySelector(sel);

// --- small helpers ---------------------------------------------------------------

/**
 * Builds an element: h('td', {class: 'x'}, 'text', otherNode). Strings are
 * added as text, never as HTML, so API data cannot inject markup.
 */
function h(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    e.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

/**
 * The colour family of a state, shared by every state machine: ok (up),
 * busy (in transition), idle (deliberately not running), bad (error /
 * missing), gone (deleted). Unknown states count as busy.
 */
function tone(state) {
  if (!state) return 'none';
  if (/error|missing/.test(state)) return 'bad';
  if (/^(deleted|soft_deleted|destroy|reverted)$/.test(state)) return 'gone';
  if (/^(active|created|run|running|success|on)$/.test(state)) return 'ok';
  if (/^(paused|suspended|stopped|shelved|shelved_offloaded|halt|off|shutdown|rescued)$/.test(state)) return 'idle';
  return 'busy';
}

function badge(state, empty = '—') {
  return h('span', { class: `badge tone-${tone(state)}` }, state || empty);
}

/** Unix ms (a JSON string) -> local "YYYY-MM-DD HH:MM:SS"; "0"/"" -> "—". */
function fmtTime(ms) {
  const n = Number(ms);
  if (!n) return '—';
  const d = new Date(n);
  const p = (x) => String(x).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

/** A duration in ms -> "850 ms", "4.2 s", "3 min 5 s", "2 h 10 min". */
function fmtDuration(ms) {
  if (!Number.isFinite(ms) || ms < 0) return '—';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`;
  const s = Math.floor(ms / 1000);
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

function fmtMiB(mib) {
  const n = Number(mib);
  if (!n) return '0';
  return n >= 1024 && n % 1024 === 0 ? `${n / 1024} GiB` : `${n} MiB`;
}

/** Shows (or hides, for a falsy value) an error or notice box. */
function show(box, content) {
  box.replaceChildren();
  if (!content) {
    box.hidden = true;
    return;
  }
  box.append(content);
  box.hidden = false;
}

/** An ApiError as page content: the message verbatim plus any 422 problems. */
function errorContent(err) {
  const text = err instanceof ApiError ? err.toString() : String(err && err.message ? err.message : err);
  const frag = document.createDocumentFragment();
  frag.append(text);
  if (err && Array.isArray(err.problems) && err.problems.length) {
    frag.append(h('ul', {}, err.problems.map((p) => h('li', {}, `${p.path}: ${p.message}`))));
  }
  return frag;
}

/** Remembers that a record was seen in `state` (consecutive repeats folded). */
function observe(kind, id, field, state) {
  if (!state) return;
  const key = `${kind}:${id}:${field}`;
  const list = observed.get(key) || [];
  if (list[list.length - 1] !== state) list.push(state);
  observed.set(key, list);
}

function observeInstance(inst) {
  for (const field of ['vm_state', 'lifecycle_state', 'record_state', 'power_state']) {
    observe('instance', inst.id, field, inst[field]);
  }
}

/** An instance field -> the field of the Instance document with its history. */
const INSTANCE_HISTORY = {
  vm_state: 'vm_state_history',
  record_state: 'record_state_history',
  lifecycle_state: 'lifecycle_history',
};

/**
 * The server's history of a record's `field` (states oldest first, the
 * current one last), or null when the document has none: an older server,
 * or an empty list (proto JSON leaves empty lists out, e.g. a VMM state
 * that no node has reported yet).
 */
function serverHistory(kind, record, field) {
  const list = record[kind === 'instance' ? INSTANCE_HISTORY[field] : 'history'];
  return Array.isArray(list) && list.length ? list : null;
}

// --- loading -------------------------------------------------------------------

let chain = Promise.resolve();

/** Runs fn after every earlier load has been applied (see the module comment). */
function enqueue(fn) {
  chain = chain.then(fn).then(() => show($('#load-error'), null), (err) => {
    if (err instanceof ApiError && err.code === 401) return;  // navigating to the login page
    console.error(err);
    show($('#load-error'), errorContent(err));
  });
  return chain;
}

async function loadMachines() {
  if (machines.length) return;  // the machines are fixed for the controller's lifetime
  const res = await api('GET', '/v1/state-machines');
  machines.push(...(res.machines || []));
  buildGraphs();
}

async function loadNodes() {
  const res = await api('GET', '/v1/nodes');
  const now = performance.now();
  nodes.clear();
  for (const n of res.nodes || []) {
    n._age0 = Number(n.checkin_age_ms);
    n._t0 = now;
    nodes.set(n.name, n);
    observe('node', n.name, 'state', n.state);
  }
  if (!nodes.has(selectedNode)) selectedNode = nodes.size ? nodes.keys().next().value : null;
  renderNodes();
  renderMachineSelectors();
}

async function loadInstances() {
  const res = await api('GET', '/v1/instances');
  const before = instances.get(selectedInstance);
  instances.clear();
  for (const inst of res.instances || []) {
    instances.set(inst.id, inst);
    observeInstance(inst);
  }
  afterInstanceChange(before);
  renderInstances();
  renderNetworks();  // port cells show instance names
}

async function loadNetworks() {
  const res = await api('GET', '/v1/networks');
  networks.clear();
  for (const n of res.networks || []) {
    networks.set(n.id, n);
    observe('network', n.id, 'state', n.state);
  }
  if (!networks.has(selectedNetwork)) selectedNetwork = networks.size ? networks.keys().next().value : null;
  renderNetworks();
  renderMachineSelectors();
}

/** Re-fetches one instance; a 404 means it was purged. */
async function refreshInstance(id) {
  const before = id === selectedInstance ? instances.get(id) : undefined;
  try {
    const inst = await api('GET', `/v1/instances/${encodeURIComponent(id)}`);
    instances.set(inst.id, inst);
    observeInstance(inst);
  } catch (err) {
    if (!(err instanceof ApiError) || err.code !== 404) throw err;
    instances.delete(id);
  }
  if (id === selectedInstance) afterInstanceChange(before);
}

async function loadActionLog(id) {
  let res;
  try {
    res = await api('GET', `/v1/instances/${encodeURIComponent(id)}/actions`);
  } catch (err) {
    if (!(err instanceof ApiError) || err.code !== 404) throw err;
    res = { actions: [] };  // purged meanwhile; the instance's own refresh says so
  }
  if (id !== selectedInstance) return;  // the user moved on meanwhile
  actionLog = res.actions || [];
  renderActionLog();
  renderInstanceGraphs();
}

function reloadAll() {
  return enqueue(async () => {
    const results = await Promise.allSettled([loadMachines(), loadNodes(), loadInstances(), loadNetworks()]);
    // The action log after the instances: the selected one may be gone.
    if (selectedInstance) results.push(...await Promise.allSettled([loadActionLog(selectedInstance)]));
    const failed = results.find((r) => r.status === 'rejected');
    if (failed) throw failed.reason;
  });
}

// --- live updates (server-sent events) -------------------------------------------

const pending = { instances: new Set(), nodes: false, networks: false, timer: 0 };

/** Collects `change` events for ~100 ms, then fetches what they named once. */
function queueChange(change) {
  for (const id of change.instances || []) pending.instances.add(id);
  if ((change.nodes || []).length) pending.nodes = true;
  if ((change.networks || []).length) pending.networks = true;
  if (pending.timer) return;
  pending.timer = setTimeout(() => {
    const ids = [...pending.instances];
    const wantNodes = pending.nodes;
    const wantNetworks = pending.networks;
    pending.instances.clear();
    pending.nodes = pending.networks = false;
    pending.timer = 0;
    enqueue(async () => {
      const jobs = ids.map(refreshInstance);
      if (wantNodes) jobs.push(loadNodes());
      if (wantNetworks) jobs.push(loadNetworks());
      if (selectedInstance && ids.includes(selectedInstance)) jobs.push(loadActionLog(selectedInstance));
      const results = await Promise.allSettled(jobs);
      if (ids.length) {
        renderInstances();
        renderNetworks();
      }
      const failed = results.find((r) => r.status === 'rejected');
      if (failed) throw failed.reason;
    });
  }, 100);
}

function connectEvents() {
  const live = $('#live');
  const es = new EventSource('/v1/events', { withCredentials: true });
  es.onopen = () => {
    live.classList.add('on');
    live.textContent = 'live';
  };
  es.onerror = () => {
    live.classList.remove('on');
    live.textContent = 'offline';
    // CONNECTING: the browser retries by itself. CLOSED: the server answered
    // with an error (an expired session, most likely); ask the API once,
    // which goes to the login page on a 401, and reconnect a bit later.
    if (es.readyState === EventSource.CLOSED) {
      api('GET', '/v1/nodes').catch(() => {});
      setTimeout(connectEvents, 3000);
    }
  };
  es.addEventListener('hello', () => {
    window.__events.hello++;
    reloadAll();
  });
  es.addEventListener('change', (ev) => {
    window.__events.change++;
    let change;
    try {
      change = JSON.parse(ev.data);
    } catch (err) {
      console.error('bad change event', ev.data, err);
      return;
    }
    const seen = window.__events.instances;
    seen.push(...(change.instances || []));
    if (seen.length > EVENT_IDS_MAX) seen.splice(0, seen.length - EVENT_IDS_MAX);
    queueChange(change);
  });
}

// --- rendering: tables ------------------------------------------------------------

function emptyRow(cols, text) {
  return h('tr', {}, h('td', { class: 'empty', colspan: cols }, text));
}

function renderNodes() {
  const rows = [...nodes.values()].sort((a, b) => a.name.localeCompare(b.name)).map((n) =>
    h('tr', { 'data-node': n.name, class: `clickable${n.name === selectedNode ? ' selected' : ''}` },
      h('td', {}, n.name),
      h('td', { class: 'state' }, badge(n.state)),
      h('td', {}, n.vcpus),
      h('td', {}, fmtMiB(n.memory_mib)),
      h('td', {}, n.instances),
      h('td', { class: 'checkin-age' }, checkinAge(n)),
      h('td', { class: 'cannot-run' }, n.cannot_run ? h('span', { class: 'warn' }, n.cannot_run) : '—')));
  $('#nodes tbody').replaceChildren(...(rows.length ? rows : [emptyRow(7, 'No nodes')]));
}

function checkinAge(n) {
  if (!Number(n.last_checkin) && !n._age0) return 'never';
  return fmtDuration(n._age0 + (performance.now() - n._t0));
}

/** Display only: the age grows locally between the server's updates. */
function tickCheckinAges() {
  for (const row of document.querySelectorAll('#nodes tr[data-node]')) {
    const n = nodes.get(row.dataset.node);
    if (n) row.querySelector('.checkin-age').textContent = checkinAge(n);
  }
}

function renderInstances() {
  const rows = [...instances.values()]
    .sort((a, b) => a.name.localeCompare(b.name) || a.id.localeCompare(b.id))
    .map((i) =>
      h('tr', { 'data-instance': i.id, class: `clickable${i.id === selectedInstance ? ' selected' : ''}` },
        h('td', { class: 'name' }, i.name),
        h('td', { class: 'id' }, i.id),
        h('td', { class: 'vm-state' }, badge(i.vm_state)),
        h('td', { class: 'task-state' }, i.task_state ? badge(i.task_state) : ''),
        h('td', { class: 'record-state' }, badge(i.record_state)),
        h('td', { class: 'node' }, i.node),
        h('td', { class: 'power-state' }, i.power_state)));
  $('#instances tbody').replaceChildren(...(rows.length ? rows : [emptyRow(7, 'No instances yet: create one above')]));
  if (justCreated && (instances.get(justCreated) || {}).vm_state !== 'building') {
    justCreated = null;
    show($('#create-notice'), null);
  }
  renderDetail();
}

function renderNetworks() {
  const nameOf = (id) => (instances.get(id) || {}).name || id;
  const rows = [...networks.values()].sort((a, b) => a.name.localeCompare(b.name)).map((n) =>
    h('tr', { 'data-network': n.id, class: `clickable${n.id === selectedNetwork ? ' selected' : ''}` },
      h('td', {}, n.name),
      h('td', { class: 'id' }, n.id),
      h('td', { class: 'state' }, badge(n.state)),
      h('td', { class: 'mono' }, n.cidr),
      h('td', {}, n.vni),
      h('td', {}, (n.ports || []).length
        ? h('ul', { class: 'plain mono' }, n.ports.map((p) =>
          h('li', { 'data-port': `${p.instance}/${p.nic}` },
            `${nameOf(p.instance)} nic${p.nic} ${p.mac} ${p.ipv4 || '—'} @${p.node || '?'}`)))
        : '—'),
      h('td', {}, Object.keys(n.vteps || {}).length
        ? h('ul', { class: 'plain mono' }, Object.entries(n.vteps).map(([node, addr]) => h('li', {}, `${node} ${addr}`)))
        : '—'),
      h('td', {}, n.error ? h('span', { class: 'warn' }, n.error) : '—')));
  $('#networks tbody').replaceChildren(...(rows.length ? rows : [emptyRow(8, 'No networks')]));
}

// --- rendering: instance detail ------------------------------------------------------

const consoleView = new ConsoleView($('#console'), $('#console-status'), $('#console-connect'));

function selectInstance(id) {
  if (id === selectedInstance) return;
  selectedInstance = id;
  actionLog = [];
  show($('#action-error'), null);
  show($('#action-notice'), null);
  consoleView.attach(id);
  renderInstances();
  renderActionLog();
  renderInstanceGraphs();
  const inst = instances.get(id);
  if (inst && inst.vm_state === 'active') consoleView.connect();
  if (id) enqueue(() => loadActionLog(id));
}

/**
 * After the selected instance was re-fetched: deselect it if it was purged,
 * and open the console when it has just become active.
 */
function afterInstanceChange(before) {
  if (!selectedInstance) return;
  const inst = instances.get(selectedInstance);
  if (!inst) {
    selectedInstance = null;
    actionLog = [];
    consoleView.attach(null);
    return;
  }
  const wasActive = before && before.vm_state === 'active';
  if (inst.vm_state === 'active' && !wasActive && !consoleView.isOpen()) consoleView.connect();
}

function renderDetail() {
  const inst = instances.get(selectedInstance);
  $('#detail-empty').hidden = !!inst;
  $('#detail-body').hidden = !inst;
  if (!inst) return;
  $('#detail-name').textContent = inst.name;
  $('#detail-id').textContent = inst.id;
  const spec = inst.spec || {};
  const board = spec.board || {};
  const boot = spec.boot || {};
  const field = (label, value, cls) => h('div', {}, h('dt', {}, label), h('dd', { class: cls }, value));
  $('#detail-fields').replaceChildren(
    field('vm_state', badge(inst.vm_state), 'vm-state'),
    field('task_state', inst.task_state ? badge(inst.task_state) : '—', 'task-state'),
    field('record_state', badge(inst.record_state), 'record-state'),
    field('lifecycle_state', badge(inst.lifecycle_state, 'unknown'), 'lifecycle-state'),
    field('power_state', inst.power_state || '—'),
    field('node', inst.node || '—'),
    field('vCPUs', board.vcpus ?? '—'),
    field('memory', board.memory_mib ? fmtMiB(board.memory_mib) : '—'),
    field('guest', boot.embedded_guest || boot.kernel_path || '—'),
    field('created', fmtTime(inst.created_at)),
    field('updated', fmtTime(inst.updated_at)));
  renderInstanceGraphs();
}

function renderActionLog() {
  const rows = [...actionLog].reverse().map((a) => {
    const running = !Number(a.finish);
    return h('tr', { 'data-request': a.request_id },
      h('td', {}, a.action),
      h('td', { class: 'mono' }, a.request_id),
      h('td', {}, fmtTime(a.start)),
      h('td', {}, running ? 'running…' : fmtDuration(Number(a.finish) - Number(a.start))),
      h('td', { class: 'result' }, badge(a.result, 'running')),
      h('td', {}, (a.events || []).length ? h('ul', { class: 'events' }, a.events.map((e) => h('li', {}, e))) : '—'));
  });
  $('#action-log tbody').replaceChildren(...(rows.length ? rows : [emptyRow(6, 'No actions recorded')]));
}

// --- rendering: state machine graphs ---------------------------------------------------

function graphBox(graph, titleText) {
  const source = graph.machine.source ? `from ${graph.machine.source}` : undefined;
  return h('div', { class: 'graph' }, h('div', { class: 'graph-title', title: source }, titleText), graph.svg);
}

/** Draws every graph once (their layout never changes afterwards). */
function buildGraphs() {
  const box = $('#instance-graphs');
  box.replaceChildren();
  // Nova first, then Propolis, then Shaken Fist: the order the user cares.
  const order = (m) => (m.field === 'vm_state' ? 0 : m.field === 'lifecycle_state' ? 1 : 2);
  for (const m of machines.filter((x) => x.object === 'instance').sort((a, b) => order(a) - order(b))) {
    // Nova's vm_state machine is a star around `active` with many commands:
    // top-to-bottom over the full width reads best; the others are chains.
    const nova = m.field === 'vm_state';
    const g = new StateGraph(m, nova ? 'TB' : 'LR');
    graphs.instance.push(g);
    const el = graphBox(g, m.title || `${m.name} (${m.field})`);
    if (nova) el.classList.add('wide');
    box.append(el);
  }
  const nodeMachine = machines.find((m) => m.object === 'node');
  if (nodeMachine) {
    graphs.node = new StateGraph(nodeMachine, 'LR');
    $('#node-graph').replaceChildren(graphs.node.svg);
  }
  const netMachine = machines.find((m) => m.object === 'network');
  if (netMachine) {
    graphs.network = new StateGraph(netMachine, 'LR');
    $('#network-graph').replaceChildren(graphs.network.svg);
  }
  renderInstanceGraphs();
  renderRecordGraphs();
}

/**
 * Highlights `record` (null: nothing) in `graph`: its current state, and
 * as history the server's list merged with what this page observed (see
 * the module comment). `fallback` gives the history sets when the server
 * sent none ({visited, traversed}, or null for empty ones).
 */
function paintHistory(graph, kind, id, record, fallback = () => null) {
  if (!record) {
    graph.highlight(null);
    return;
  }
  const field = graph.machine.field || 'state';
  const fromServer = serverHistory(kind, record, field);
  const sets = fromServer ? null : fallback();
  const visited = sets ? sets.visited : new Set();
  const traversed = sets ? sets.traversed : new Set();
  addHistory(graph, fromServer, visited, traversed);
  addHistory(graph, observed.get(`${kind}:${id}:${field}`), visited, traversed);
  graph.highlight(record[field], visited, traversed);
}

function renderInstanceGraphs() {
  const inst = instances.get(selectedInstance);
  for (const g of graphs.instance) {
    // Without a server history, Nova's vm_state history replays the action
    // log (its commands are the machine's labels); the others have none.
    const fallback = () => (g.machine.field === 'vm_state' ? walkActions(g.machine, actionLog) : null);
    paintHistory(g, 'instance', selectedInstance, inst, fallback);
  }
}

function renderRecordGraphs() {
  if (graphs.node) paintHistory(graphs.node, 'node', selectedNode, nodes.get(selectedNode));
  if (graphs.network) paintHistory(graphs.network, 'network', selectedNetwork, networks.get(selectedNetwork));
}

function renderMachineSelectors() {
  const fill = (select, entries, selected) => {
    select.replaceChildren(...entries.map(([value, label]) => h('option', { value, selected: value === selected }, label)));
    if (!entries.length) select.append(h('option', { value: '' }, 'none'));
  };
  fill($('#machine-node'), [...nodes.keys()].sort().map((n) => [n, n]), selectedNode);
  fill($('#machine-network'), [...networks.values()].map((n) => [n.id, n.name || n.id]), selectedNetwork);
  renderRecordGraphs();
}

// --- user actions ---------------------------------------------------------------------

async function onCreate(ev) {
  ev.preventDefault();
  const form = ev.currentTarget;
  const data = new FormData(form);
  const spec = {
    name: String(data.get('name') || '').trim(),
    board: { vcpus: Number(data.get('vcpus')), memory_mib: Number(data.get('memory_mib')) },
    boot: { embedded_guest: String(data.get('guest') || '').trim() },
  };
  show($('#create-error'), null);
  show($('#create-notice'), null);
  const button = form.querySelector('button[type="submit"]');
  button.disabled = true;
  try {
    const inst = await api('POST', '/v1/instances', { spec });
    instances.set(inst.id, inst);
    observeInstance(inst);
    form.elements.name.value = '';
    show($('#create-notice'), `Creating ${inst.name} (${inst.id})…`);
    justCreated = inst.id;
    renderInstances();
    selectInstance(inst.id);
  } catch (err) {
    show($('#create-error'), errorContent(err));
  } finally {
    button.disabled = false;
  }
}

/** data-action value -> the body of POST /v1/instances/{id}/actions. */
function actionBody(name) {
  if (name === 'reboot') return { action: 'reboot', type: 'SOFT' };
  if (name === 'reboot-hard') return { action: 'reboot', type: 'HARD' };
  return { action: name };
}

async function onAction(name) {
  const inst = instances.get(selectedInstance);
  if (!inst) return;
  if (name === 'delete' && !window.confirm(`Delete instance ${inst.name} (${inst.id})?`)) return;
  show($('#action-error'), null);
  show($('#action-notice'), null);
  try {
    const res = await api('POST', `/v1/instances/${encodeURIComponent(inst.id)}/actions`, actionBody(name));
    show($('#action-notice'), `${name} accepted${res && res.request_id ? ` (${res.request_id})` : ''}`);
  } catch (err) {
    // Nova's refusal ("Cannot 'pause' instance … while it is in vm_state
    // paused") is the most useful thing to show: verbatim, with its code.
    show($('#action-error'), errorContent(err));
  }
}

async function onLogout() {
  try {
    await api('POST', '/ui/logout');
  } finally {
    toLogin();
  }
}

// --- wiring ---------------------------------------------------------------------------------

$('#create-form').addEventListener('submit', onCreate);
$('#logout').addEventListener('click', onLogout);
$('#instances tbody').addEventListener('click', (ev) => {
  const row = ev.target.closest('tr[data-instance]');
  if (row) selectInstance(row.dataset.instance);
});
$('#nodes tbody').addEventListener('click', (ev) => {
  const row = ev.target.closest('tr[data-node]');
  if (!row) return;
  selectedNode = row.dataset.node;
  renderNodes();
  renderMachineSelectors();
});
$('#networks tbody').addEventListener('click', (ev) => {
  const row = ev.target.closest('tr[data-network]');
  if (!row) return;
  selectedNetwork = row.dataset.network;
  renderNetworks();
  renderMachineSelectors();
});
$('#machine-node').addEventListener('change', (ev) => {
  selectedNode = ev.target.value || null;
  renderNodes();
  renderRecordGraphs();
});
$('#machine-network').addEventListener('change', (ev) => {
  selectedNetwork = ev.target.value || null;
  renderNetworks();
  renderRecordGraphs();
});
for (const button of document.querySelectorAll('#instance-detail button[data-action]')) {
  button.addEventListener('click', () => onAction(button.dataset.action));
}

setInterval(tickCheckinAges, 1000);
connectEvents();  // its `hello` loads everything
