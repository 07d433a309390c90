// State-machine graphs: one SVG per machine from /v1/state-machines.
//
// Why laid out once and then only re-classed: dagre's layout is stable for a
// given machine but not for small input changes, and the machines never
// change while the page is open. So a StateGraph computes its layout and
// draws its SVG once; afterwards highlight() only toggles the classes
// `current`, `visited` (on state nodes) and `traversed` (on edges), and the
// stylesheet does the rest. Nothing moves when an instance changes state.
//
// Several transitions may join the same two states (the Nova table has a
// dozen commands landing on `active`); they become one edge whose label is
// the transition labels joined with ", " and wrapped, which keeps the Nova
// graph legible.
//
// The history helpers at the bottom turn a list of states (the server's
// history of a record, or the states the page observed) or, as a fallback,
// an action log into the sets highlight() takes.

import dagre from '/ui/vendor/dagre.esm.js';

const SVG_NS = 'http://www.w3.org/2000/svg';
const STATE_FONT_PX = 12;
const EDGE_FONT_PX = 10.5;
const LINE_PX = 13;
const WRAP_CHARS = 24;
const SHORT_CHARS = 30;
const LOOP_PX = 22;  // horizontal room a self-loop takes

let graphCount = 0;  // makes marker ids unique in the document

function el(name, attrs = {}, parent = null) {
  const node = document.createElementNS(SVG_NS, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (parent) parent.appendChild(node);
  return node;
}

/** A rough text width; dagre only needs boxes, not exact glyph metrics. */
function textWidth(text, px) {
  return Math.ceil(text.length * px * 0.6);
}

/**
 * Shortens a transition label for drawing. Nova's labels are command names
 * ("pause"); the Propolis and Shaken Fist tables explain each transition in
 * a sentence ("creation payload received: allocate VMM resources, …"). The
 * graph shows the sentence's first clause, at most SHORT_CHARS long; the
 * full text is the edge's tooltip.
 */
function shorten(label) {
  let text = label.split(/[:;(]/)[0].trim() || label;
  if (text.length > SHORT_CHARS) {
    const cut = text.lastIndexOf(' ', SHORT_CHARS - 1);
    text = `${text.slice(0, cut > 8 ? cut : SHORT_CHARS - 1).replace(/[,\s]+$/, '')}\u2026`;
  }
  return text;
}

/**
 * The lines an edge label is drawn as: the (shortened) labels joined with
 * ", " and word-wrapped at about WRAP_CHARS.
 */
function wrapLabels(labels) {
  const words = [];
  labels.forEach((label, i) => {
    const parts = shorten(label).split(' ');
    if (i < labels.length - 1) parts[parts.length - 1] += ',';
    words.push(...parts);
  });
  const lines = [];
  let line = '';
  for (const word of words) {
    if (line && (line + ' ' + word).length > WRAP_CHARS) {
      lines.push(line);
      line = word;
    } else {
      line = line ? `${line} ${word}` : word;
    }
  }
  if (line) lines.push(line);
  return lines;
}

/** A smooth SVG path through dagre's edge points (quadratic midpoints). */
function pathThrough(points) {
  if (points.length < 3) {
    return `M${points[0].x},${points[0].y}` + points.slice(1).map((p) => ` L${p.x},${p.y}`).join('');
  }
  let d = `M${points[0].x},${points[0].y}`;
  for (let i = 1; i < points.length - 1; i++) {
    const p = points[i];
    const n = points[i + 1];
    const mx = i === points.length - 2 ? n.x : (p.x + n.x) / 2;
    const my = i === points.length - 2 ? n.y : (p.y + n.y) / 2;
    d += ` Q${p.x},${p.y} ${mx},${my}`;
  }
  return d;
}

/**
 * Where the line from the centre of a state's drawn box towards `toward`
 * leaves the box. Needed because a state with a self-loop has a layout box
 * wider than its drawn box, and dagre ends edges at the layout box.
 */
function clipToBox(n, toward) {
  const cx = n.x - n.width / 2 + n.box / 2;
  const hw = n.box / 2;
  const hh = 14;
  const dx = toward.x - cx;
  const dy = toward.y - n.y;
  if (!dx && !dy) return { x: cx, y: n.y };
  if (Math.abs(dy) * hw > Math.abs(dx) * hh) {
    const sy = dy < 0 ? -hh : hh;
    return { x: cx + (sy * dx) / dy, y: n.y + sy };
  }
  const sx = dx < 0 ? -hw : hw;
  return { x: cx + sx, y: n.y + (sx * dy) / dx };
}

/** Edge key used for traversed-edge sets. */
export function edgeKey(from, to) {
  return `${from}\u2192${to}`;
}

export class StateGraph {
  /**
   * @param machine one entry of /v1/state-machines' "machines"
   * @param rankdir 'LR' (default) or 'TB'
   */
  constructor(machine, rankdir = 'LR') {
    this.machine = machine;
    this.id = ++graphCount;
    this.stateEls = new Map();  // state -> <g>
    this.edgeEls = new Map();   // edgeKey -> <g>
    this.svg = this.#draw(rankdir);
  }

  #draw(rankdir) {
    const m = this.machine;
    const g = new dagre.graphlib.Graph();
    g.setGraph({ rankdir, nodesep: 22, ranksep: rankdir === 'TB' ? 60 : 46, edgesep: 12, marginx: 8, marginy: 8 });
    g.setDefaultEdgeLabel(() => ({}));

    const states = new Set(m.states || []);
    if (m.initial) states.add(m.initial);
    const merged = new Map();  // edgeKey -> {from, to, labels[]}
    for (const t of m.transitions || []) {
      states.add(t.from);
      states.add(t.to);
      const key = edgeKey(t.from, t.to);
      if (!merged.has(key)) merged.set(key, { from: t.from, to: t.to, labels: [] });
      const e = merged.get(key);
      if (t.label && !e.labels.includes(t.label)) e.labels.push(t.label);
    }
    // Self-loops (reboot: active -> active) are drawn by hand to the right
    // of their state: dagre routes them poorly. The state's layout box is
    // widened to reserve room for the loop and its label.
    const loops = new Map();  // state -> {key, lines, width}
    for (const [key, e] of merged) {
      if (e.from !== e.to) continue;
      const lines = wrapLabels(e.labels);
      loops.set(e.from, { key, lines, full: e.labels, width: Math.max(0, ...lines.map((l) => textWidth(l, EDGE_FONT_PX))) });
      merged.delete(key);
    }
    for (const s of states) {
      const box = textWidth(s, STATE_FONT_PX) + 24;
      const loop = loops.get(s);
      g.setNode(s, {
        box,
        width: box + (loop ? LOOP_PX + 4 + loop.width : 0),
        height: Math.max(28, loop ? loop.lines.length * LINE_PX + 4 : 0),
      });
    }
    for (const [key, e] of merged) {
      const lines = wrapLabels(e.labels);
      const width = Math.max(0, ...lines.map((l) => textWidth(l, EDGE_FONT_PX))) + 6;
      g.setEdge(e.from, e.to, { key, lines, full: e.labels, width, height: lines.length * LINE_PX + 2, labelpos: 'c' });
    }
    dagre.layout(g);

    const { width, height } = g.graph();
    const svg = el('svg', {
      xmlns: SVG_NS,
      viewBox: `0 0 ${Math.ceil(width)} ${Math.ceil(height)}`,
      width: Math.ceil(width),
      'data-machine': m.name,
      // Shrinks to fit its box (CSS max-width) but not below 3/4 of its
      // natural size: past that the labels are unreadable and the box scrolls.
      style: `min-width: ${Math.ceil(width * 0.75)}px`,
      role: 'img',
      'aria-label': m.title || m.name,
    });
    const defs = el('defs', {}, svg);
    for (const [suffix, cls] of [['', ''], ['-hl', 'hl']]) {
      const marker = el('marker', {
        id: `arrow-${this.id}${suffix}`, class: cls, viewBox: '0 0 10 10', refX: 9, refY: 5,
        markerUnits: 'userSpaceOnUse', markerWidth: 9, markerHeight: 9, orient: 'auto-start-reverse',
      }, defs);
      el('path', { d: 'M0,0 L10,5 L0,10 z' }, marker);
    }

    const edges = el('g', { class: 'edges' }, svg);
    for (const e of g.edges()) {
      const data = g.edge(e);
      const group = el('g', { class: 'edge', 'data-from': e.v, 'data-to': e.w }, edges);
      const points = [...data.points];
      points[0] = clipToBox(g.node(e.v), points[1]);
      points[points.length - 1] = clipToBox(g.node(e.w), points[points.length - 2]);
      el('path', { d: pathThrough(points), 'marker-end': `url(#arrow-${this.id})` }, group);
      const top = data.y - ((data.lines.length - 1) * LINE_PX) / 2;
      data.lines.forEach((line, i) => {
        const text = el('text', { x: data.x, y: top + i * LINE_PX }, group);
        text.textContent = line;
      });
      const title = el('title', {}, group);
      title.textContent = `${e.v} \u2192 ${e.w}\n${data.full.join('\n')}`;
      this.edgeEls.set(data.key, group);
    }

    const nodes = el('g', { class: 'states' }, svg);
    for (const s of g.nodes()) {
      const n = g.node(s);
      const group = el('g', { class: 'state', 'data-state': s }, nodes);
      if (s === m.initial) group.classList.add('initial');
      const left = n.x - n.width / 2;
      const cx = left + n.box / 2;  // the state's box sits at the left of its layout box
      el('rect', { x: left, y: n.y - 14, width: n.box, height: 28, rx: 14, ry: 14 }, group);
      const text = el('text', { x: cx, y: n.y }, group);
      text.textContent = s;
      this.stateEls.set(s, group);
      const loop = loops.get(s);
      if (loop) this.#drawLoop(edges, s, loop, left + n.box, n.y);
    }
    return svg;
  }

  /** A self-loop leaving the right edge (x, y) of a state's box. */
  #drawLoop(parent, state, loop, x, y) {
    const group = el('g', { class: 'edge loop', 'data-from': state, 'data-to': state }, parent);
    const x0 = x - 6;
    el('path', {
      d: `M${x0},${y - 12} C${x0 + LOOP_PX},${y - 26} ${x0 + LOOP_PX},${y + 26} ${x0 + 2},${y + 13}`,
      'marker-end': `url(#arrow-${this.id})`,
    }, group);
    const top = y - ((loop.lines.length - 1) * LINE_PX) / 2;
    loop.lines.forEach((line, i) => {
      const text = el('text', { x: x + LOOP_PX - 2, y: top + i * LINE_PX, style: 'text-anchor: start' }, group);
      text.textContent = line;
    });
    const title = el('title', {}, group);
    title.textContent = `${state} \u2192 ${state}\n${loop.full.join('\n')}`;
    this.edgeEls.set(loop.key, group);
  }

  /** Does the machine have an edge from -> to? */
  hasEdge(from, to) {
    return this.edgeEls.has(edgeKey(from, to));
  }

  /**
   * Re-classes the drawing: `current` on the current state, `visited` on the
   * states in `visited`, `traversed` on the edges (edgeKey) in `traversed`.
   */
  highlight(current, visited = new Set(), traversed = new Set()) {
    for (const [s, g] of this.stateEls) {
      g.classList.toggle('current', s === current);
      g.classList.toggle('visited', visited.has(s));
    }
    for (const [key, g] of this.edgeEls) {
      const on = traversed.has(key);
      g.classList.toggle('traversed', on);
      g.querySelector('path').setAttribute('marker-end', `url(#arrow-${this.id}${on ? '-hl' : ''})`);
    }
  }
}

// --- history ---------------------------------------------------------------

/**
 * The transition an action took from `from`, matched by label: exact, then
 * a label that extends the action's name ("reboot" -> "reboot_soft"), then
 * one the action's name extends. Null when the machine has none.
 */
export function transitionFor(machine, from, action) {
  const out = (machine.transitions || []).filter((t) => t.from === from);
  return out.find((t) => t.label === action)
    || out.find((t) => t.label && t.label.startsWith(action))
    || out.find((t) => t.label && action.startsWith(t.label))
    || null;
}

/**
 * Walks the machine from its initial state through the successful actions of
 * an action log (oldest first). Returns {visited: Set, traversed: Set}.
 */
export function walkActions(machine, actions) {
  const visited = new Set();
  const traversed = new Set();
  let at = machine.initial;
  if (!at) return { visited, traversed };
  visited.add(at);
  for (const a of actions || []) {
    if (a.result !== 'success') continue;
    const name = String(a.action || '').replace(/-/g, '_');
    const t = transitionFor(machine, at, name);
    if (!t) continue;
    traversed.add(edgeKey(t.from, t.to));
    visited.add(t.to);
    at = t.to;
  }
  return { visited, traversed };
}

/**
 * Adds a sequence of states, oldest first (a server history or the states
 * observed; null adds nothing), to history sets: every state is visited,
 * every consecutive pair the graph has an edge for is traversed.
 */
export function addHistory(graph, states, visited, traversed) {
  let prev = null;
  for (const s of states || []) {
    if (!s) continue;
    visited.add(s);
    if (prev && prev !== s && graph.hasEdge(prev, s)) traversed.add(edgeKey(prev, s));
    prev = s;
  }
}
