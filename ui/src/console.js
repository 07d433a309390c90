// The serial console of the selected instance: xterm.js over a WebSocket.
//
// Protocol (see the server): ws(s)://host/v1/instances/{id}/console,
// authenticated by the session cookie. The server sends BINARY frames of raw
// console bytes, the first one being the history so far; the client sends
// keystrokes as TEXT frames. Before the instance runs the server refuses the
// upgrade with an HTTP error, which a browser only reports as a failed
// socket: we show "no console" and offer a retry rather than retrying on a
// timer (the dashboard never polls).
//
// One Terminal for the page, created lazily the first time the console is
// visible (xterm measures its container when it opens). Switching instances
// or reconnecting resets it, since the server replays the history anyway.
// The terminal is exposed as window.__term so the browser test can read the
// screen buffer.

import { Terminal } from '/ui/vendor/xterm.mjs';

export class ConsoleView {
  /**
   * @param container element the terminal is drawn in (#console)
   * @param status element for the connection status text
   * @param button the Connect / Disconnect button
   */
  constructor(container, status, button) {
    this.container = container;
    this.status = status;
    this.button = button;
    this.term = null;
    this.ws = null;
    this.instanceId = null;
    this.button.addEventListener('click', () => {
      if (this.isOpen()) this.disconnect('disconnected');
      else this.connect();
    });
  }

  #ensureTerminal() {
    if (this.term) return;
    this.term = new Terminal({
      cols: 100,
      rows: 18,
      convertEol: true,  // guests may print bare "\n"
      cursorBlink: true,
      scrollback: 2000,
      fontFamily: 'ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace',
      fontSize: 13,
      theme: { background: '#0f131b' },
    });
    this.term.open(this.container);
    this.term.onData((data) => {
      if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(data);
    });
    window.__term = this.term;
  }

  #setStatus(text, buttonLabel) {
    this.status.textContent = text;
    this.button.textContent = buttonLabel;
  }

  /** True while a socket is connecting or open. */
  isOpen() {
    return !!this.ws && (this.ws.readyState === WebSocket.CONNECTING || this.ws.readyState === WebSocket.OPEN);
  }

  /** Shows the console of another instance (or none); closes the old socket. */
  attach(instanceId) {
    if (instanceId === this.instanceId) return;
    this.disconnect('not connected');
    this.instanceId = instanceId;
    if (this.term) this.term.reset();
  }

  connect() {
    if (!this.instanceId) return;
    this.#ensureTerminal();
    this.disconnect('connecting…');
    this.term.reset();
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    const id = this.instanceId;
    const ws = new WebSocket(`${scheme}://${location.host}/v1/instances/${encodeURIComponent(id)}/console`);
    ws.binaryType = 'arraybuffer';
    let opened = false;
    this.ws = ws;
    this.#setStatus('connecting…', 'Disconnect');
    ws.onopen = () => {
      opened = true;
      this.#setStatus('connected', 'Disconnect');
      this.term.focus();
    };
    ws.onmessage = (ev) => {
      if (this.ws !== ws) return;
      this.term.write(typeof ev.data === 'string' ? ev.data : new Uint8Array(ev.data));
    };
    ws.onclose = () => {
      if (this.ws !== ws) return;  // replaced by a newer socket
      this.ws = null;
      if (opened) this.#setStatus('disconnected', 'Reconnect');
      else this.#setStatus('no console (is the instance running?)', 'Retry');
    };
  }

  /** Closes the socket, if any, and shows `text` as the status. */
  disconnect(text) {
    const ws = this.ws;
    this.ws = null;
    if (ws) ws.close();
    this.#setStatus(text, 'Connect');
  }
}
