// The Stageworks admin page: the live supervision tree and event flow read
// from /admin/stream (server-sent events read through fetch(), so the token
// goes in the Authorization header, never in a URL), the charts from
// /admin/history, and the operator's actions, each confirmed first.
'use strict';

const COLORS = ['#2b6cb0', '#c05621', '#2f855a', '#6b46c1', '#b83280', '#2c7a7b', '#975a16', '#4a5568'];
const TOKEN_KEY = 'stageworks-admin-token';
const $ = (id) => document.getElementById(id);

const state = {
  stream: null,          // the AbortController of the open stream
  retryMs: 2000,
  reconnect: null,
  live: null,            // the last snapshot
  deadLetterCount: -1,
  openFailures: new Set(),
  expanded: new Set(),   // services whose workers are shown
  historyTimer: null,
};

function token() { return $('token').value.trim(); }
function authHeaders() { return token() ? { authorization: 'Bearer ' + token() } : {}; }

function setStatus(text, kind) {
  const pill = $('status');
  pill.textContent = text;
  pill.className = 'pill ' + kind;
}

function flash(text, ok) {
  const el = $('flash');
  el.textContent = text;
  el.className = ok ? 'ok' : 'bad';
}

// ---- the stream ---------------------------------------------------------

function connect() {
  if (state.stream) state.stream.abort();
  clearTimeout(state.reconnect);
  const controller = new AbortController();
  state.stream = controller;
  setStatus('connecting', 'wait');
  let refused = false;
  readStream(controller).catch((err) => {
    if (controller.signal.aborted) return;
    refused = err.refused === true;
    setStatus(refused ? 'token refused' : 'disconnected', 'off');
    flash('stream: ' + err.message, false);
  }).finally(() => {
    // A refused token is not retried: the operator enters another one.
    if (state.stream === controller && !controller.signal.aborted && !refused) {
      state.reconnect = setTimeout(connect, state.retryMs);
    }
  });
  loadHistory();
}

async function readStream(controller) {
  const response = await fetch('/admin/stream', {
    headers: authHeaders(), signal: controller.signal, cache: 'no-store',
  });
  if (!response.ok) {
    const refused = response.status === 401;
    const err = new Error(refused ? 'the admin token was refused' : await errorText(response));
    err.refused = refused;
    throw err;
  }
  setStatus('live', 'on');
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      onEvent(buffer.slice(0, end));
      buffer = buffer.slice(end + 2);
    }
  }
  throw new Error('the stream ended');
}

function onEvent(raw) {
  let name = 'message';
  const data = [];
  for (const line of raw.split('\n')) {
    const colon = line.indexOf(':');
    if (colon === 0) continue; // a comment
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
    if (field === 'event') name = value;
    else if (field === 'data') data.push(value);
    else if (field === 'retry' && /^\d+$/.test(value)) state.retryMs = Number(value);
  }
  if (name === 'snapshot' && data.length) render(JSON.parse(data.join('\n')));
}

async function errorText(response) {
  try {
    const body = await response.json();
    return (body.error && body.error.message) || response.statusText;
  } catch (_) { return response.status + ' ' + response.statusText; }
}

// ---- rendering ------------------------------------------------------------

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

function cell(row, text, cls) { const td = el('td', text, cls); row.appendChild(td); return td; }

function seconds(s) {
  if (s === null || s === undefined) return '';
  if (s < 1) return (s * 1000).toFixed(0) + ' ms';
  if (s < 120) return s.toFixed(1) + ' s';
  if (s < 7200) return (s / 60).toFixed(1) + ' min';
  return (s / 3600).toFixed(1) + ' h';
}

function bytes(n) {
  if (n === null || n === undefined) return '';
  return (n / 1048576).toFixed(1) + ' MiB';
}

function render(live) {
  state.live = live;
  $('updated').textContent = 'updated ' + new Date(live.at).toLocaleTimeString();
  $('rss').textContent = live.rss_bytes ? 'RSS ' + bytes(live.rss_bytes) : '';
  renderTree(live.services);
  renderEvents(live.events);
}

const previousShed = new Map();

function circuitText(service) {
  const c = service.circuit;
  if (!c) return '';
  if (c.state === 'open' && c.forced) return 'open (forced)';
  if (c.state === 'open' && service.retry_in_seconds !== null) {
    return 'open (half-open in ' + seconds(service.retry_in_seconds) + ')';
  }
  return c.state.replace('_', '-');
}

function renderTree(services) {
  const body = el('tbody');
  body.id = 'tree-body';
  for (const service of services) {
    body.appendChild(serviceRow(service));
    if (state.openFailures.has(service.name)) body.appendChild(failuresRow(service));
    if (state.expanded.has(service.name)) {
      for (const worker of service.children) body.appendChild(workerRow(worker));
    }
  }
  $('tree-body').replaceWith(body);
}

function serviceRow(service) {
  const row = el('tr', null, 'service');
  row.dataset.service = service.name;
  nameCell(row, service);
  cell(row, service.status, service.status).dataset.field = 'status';
  const circuit = cell(row, circuitText(service), service.circuit ? service.circuit.state : '');
  circuit.dataset.field = 'circuit';
  if (service.circuit && service.circuit.trips) circuit.title = service.circuit.trips + ' trips';
  const restarts = cell(row, service.restarts + ' (' + (service.restarts_in_window ?? 0) + ')', 'num');
  restarts.dataset.field = 'restarts';
  restarts.dataset.value = service.restarts;
  cell(row, service.messages_handled, 'num');
  const queue = service.queue;
  cell(row, queue ? service.mailbox_depth + ' / ' + queue.limit : service.mailbox_depth, 'num');
  if (queue) {
    const before = previousShed.get(service.name);
    previousShed.set(service.name, queue.shed);
    const shedding = before !== undefined && queue.shed > before;
    cell(row, shedding ? queue.shed + ' (shedding)' : queue.shed, 'num' + (shedding ? ' shedding' : ''));
  } else cell(row, '');
  failuresCell(row, service);
  cell(row, queue ? queue.expired : '', 'num');
  cell(row, queue ? queue.wait_ms.toFixed(1) + ' ms' : '', 'num');
  lastFailureCell(row, service);
  const actions = cell(row, null, 'actions');
  actions.appendChild(actionButton('restart', service.name, 'Restart'));
  actions.appendChild(actionButton('open', service.name, 'Force open'));
  actions.appendChild(actionButton('close', service.name, 'Close'));
  return row;
}

// The service's name, and a toggle for its workers (collapsed at first: a
// service may have dozens) saying how many are up.
function nameCell(row, service) {
  const td = cell(row, service.name + ' ');
  const workers = service.children || [];
  if (!workers.length) return;
  const up = workers.filter((w) => w.status === 'running').length;
  const open = state.expanded.has(service.name);
  const toggle = el('button', (open ? '▾ ' : '▸ ') + workers.length + ' workers' + (up < workers.length ? ', ' + (workers.length - up) + ' down' : ''),
    up < workers.length ? 'danger' : '');
  toggle.type = 'button';
  toggle.dataset.toggle = 'workers';
  toggle.title = 'show or hide the workers';
  toggle.addEventListener('click', () => {
    if (open) state.expanded.delete(service.name); else state.expanded.add(service.name);
    if (state.live) renderTree(state.live.services);
  });
  td.appendChild(toggle);
}

function failuresCell(row, service) {
  const failures = service.recent_failures || [];
  const td = cell(row, null, 'num');
  td.dataset.field = 'failures';
  if (!failures.length) { td.textContent = '0'; return; }
  const toggle = el('button', failures.length + (state.openFailures.has(service.name) ? ' ▾' : ' ▸'));
  toggle.title = 'recent failures with their reasons';
  toggle.addEventListener('click', () => {
    if (state.openFailures.has(service.name)) state.openFailures.delete(service.name);
    else state.openFailures.add(service.name);
    if (state.live) renderTree(state.live.services);
  });
  td.appendChild(toggle);
}

function failuresRow(service) {
  const row = el('tr', null, 'failures');
  const td = cell(row, null);
  td.colSpan = 12;
  const list = el('ul', null, 'failures');
  for (const f of service.recent_failures || []) {
    list.appendChild(el('li', new Date(f.at).toLocaleTimeString() + (f.worker ? ' ' + f.worker : '') + ': ' + f.reason));
  }
  td.appendChild(list);
  return row;
}

function lastFailureCell(row, node) {
  const f = node.last_failure;
  cell(row, f ? new Date(f.at).toLocaleTimeString() + ' ' + f.reason : '', 'reason');
}

function workerRow(worker) {
  const row = el('tr', null, 'worker');
  row.dataset.worker = worker.name;
  cell(row, worker.name);
  cell(row, worker.status, worker.status);
  cell(row, '');
  const restarts = cell(row, worker.restarts, 'num');
  restarts.dataset.field = 'restarts';
  restarts.dataset.value = worker.restarts;
  cell(row, worker.messages_handled, 'num');
  cell(row, worker.mailbox_depth, 'num');
  cell(row, ''); cell(row, ''); cell(row, ''); cell(row, '');
  lastFailureCell(row, worker);
  cell(row, null).appendChild(actionButton('restart', worker.name, 'Restart'));
  return row;
}

function renderEvents(events) {
  $('transport').textContent = 'transport: ' + events.transport;
  const producers = el('tbody');
  for (const p of events.producers) {
    const row = el('tr');
    row.dataset.producer = p.name;
    cell(row, p.name);
    cell(row, p.unpublished ?? '?', 'num');
    cell(row, seconds(p.oldest_unpublished_seconds), 'num');
    producers.appendChild(row);
  }
  $('producers').tBodies[0].replaceWith(producers);
  const subscribers = el('tbody');
  let waiting = 0;
  for (const s of events.subscribers) {
    const row = el('tr');
    row.dataset.subscriber = s.name;
    cell(row, s.name);
    cell(row, s.topics.join(', '));
    cell(row, s.delivered, 'num');
    cell(row, s.failed_attempts, 'num');
    cell(row, s.pending ?? '?', 'num');
    cell(row, seconds(s.lag_seconds), 'num');
    cell(row, s.dead_letters ?? '?', 'num' + (s.dead_letters ? ' open' : ''));
    waiting += s.dead_letters || 0;
    subscribers.appendChild(row);
  }
  $('subscribers').tBodies[0].replaceWith(subscribers);
  $('event-errors').textContent = events.errors.join('; ');
  if (waiting !== state.deadLetterCount) {
    state.deadLetterCount = waiting;
    loadDeadLetters();
  }
}

async function loadDeadLetters() {
  try {
    const response = await fetch('/admin/events/dead-letters', { headers: authHeaders(), cache: 'no-store' });
    if (!response.ok) throw new Error(await errorText(response));
    renderDeadLetters((await response.json()).data);
  } catch (err) { flash('dead letters: ' + err.message, false); }
}

function renderDeadLetters(letters) {
  const body = el('tbody');
  if (!letters.length) {
    const row = el('tr');
    cell(row, 'none', 'muted').colSpan = 7;
    body.appendChild(row);
  }
  for (const letter of letters) {
    const row = el('tr');
    row.dataset.deadLetter = letter.id;
    cell(row, new Date(letter.failed_at).toLocaleString());
    cell(row, letter.subscriber);
    cell(row, letter.event.topic);
    cell(row, letter.attempts, 'num');
    cell(row, letter.last_error, 'reason');
    cell(row, letter.event.id);
    cell(row, null).appendChild(actionButton('replay', letter.id, 'Replay'));
    body.appendChild(row);
  }
  $('dead-letters').tBodies[0].replaceWith(body);
}

// ---- actions --------------------------------------------------------------

const ACTIONS = {
  restart: { question: (n) => 'Restart ' + n + '? Its workers stop (finishing their message) and start again.',
             path: (n) => '/admin/actors/' + encodeURIComponent(n) + '/restart', done: (n) => n + ' restarted' },
  open: { question: (n) => 'Force the circuit of ' + n + ' open? Its routes answer 503 until someone closes it.',
          path: (n) => '/admin/circuits/' + encodeURIComponent(n) + '/open', done: (n) => n + ': circuit forced open' },
  close: { question: (n) => 'Close the circuit of ' + n + '? Calls are admitted again at once.',
           path: (n) => '/admin/circuits/' + encodeURIComponent(n) + '/close', done: (n) => n + ': circuit closed' },
  replay: { question: (n) => 'Replay dead letter ' + n + '? It is delivered to its subscriber once more, now.',
            path: (n) => '/admin/events/dead-letters/' + encodeURIComponent(n) + '/replay', done: (n) => 'dead letter ' + n + ' replayed' },
};

function actionButton(action, target, label) {
  const button = el('button', label, action === 'restart' || action === 'replay' ? '' : 'danger');
  button.type = 'button';
  button.dataset.action = action;
  button.dataset.target = target;
  return button;
}

function confirmDialog(text) {
  const dialog = $('confirm');
  $('confirm-text').textContent = text;
  return new Promise((resolve) => {
    dialog.addEventListener('close', () => resolve(dialog.returnValue === 'ok'), { once: true });
    dialog.returnValue = '';
    dialog.showModal();
  });
}

async function perform(action, target) {
  const spec = ACTIONS[action];
  if (!spec || !(await confirmDialog(spec.question(target)))) return;
  try {
    const response = await fetch(spec.path(target), { method: 'POST', headers: authHeaders(), cache: 'no-store' });
    if (!response.ok) throw new Error(await errorText(response));
    flash(spec.done(target) + ' (recorded by audit)', true);
    if (action === 'replay') loadDeadLetters();
  } catch (err) { flash(action + ' ' + target + ': ' + err.message, false); }
}

document.addEventListener('click', (event) => {
  const button = event.target.closest('button[data-action]');
  if (button) perform(button.dataset.action, button.dataset.target);
});

// ---- charts -----------------------------------------------------------------

const CHARTS = [
  { metric: 'http_requests_per_second', title: 'Requests / s per route', unit: '/s' },
  { metric: 'http_errors_per_second', title: '5xx / s per route', unit: '/s' },
  { metric: 'http_p99_ms', title: 'p99 latency per route', unit: 'ms' },
  { metric: 'service_messages_per_second', title: 'Messages / s per service', unit: '/s' },
  { metric: 'service_queue_wait_ms', title: 'Queue wait per service (moving mean)', unit: 'ms' },
  { metric: 'event_lag_seconds', title: 'Event lag per subscriber', unit: 's' },
  { metric: 'event_pending', title: 'Events pending per subscriber', unit: '' },
  { metric: 'process_rss_bytes', title: 'Resident memory', unit: 'MiB', scale: 1 / 1048576 },
];

// The most lines one chart draws: the series with the highest peaks.
const MAX_LINES = 8;

async function loadHistory() {
  clearTimeout(state.historyTimer);
  let every = 5;
  try {
    const response = await fetch('/admin/history', { headers: authHeaders(), cache: 'no-store' });
    if (response.status === 401) { $('history-note').textContent = 'history: the admin token was refused'; return; }
    if (!response.ok) throw new Error(await errorText(response));
    const history = await response.json();
    every = history.every_seconds;
    $('history-note').textContent = history.samples + ' of ' + history.capacity + ' samples, one every ' +
      seconds(history.every_seconds) + ' (' + seconds(history.capacity * history.every_seconds) + ' kept)';
    drawCharts(history);
  } catch (err) { $('history-note').textContent = 'history: ' + err.message; }
  state.historyTimer = setTimeout(loadHistory, Math.max(2, every) * 1000);
}

function drawCharts(history) {
  const container = $('charts');
  for (const spec of CHARTS) {
    let box = container.querySelector('[data-metric="' + spec.metric + '"]');
    if (!box) {
      box = el('div', null, 'chart');
      box.dataset.metric = spec.metric;
      box.appendChild(el('h4', spec.title + (spec.unit ? ' (' + spec.unit + ')' : '')));
      box.appendChild(el('canvas'));
      box.appendChild(el('div', null, 'legend'));
      container.appendChild(box);
    }
    const series = history.series
      .filter((s) => s.metric === spec.metric)
      .map((s) => ({ label: s.label || spec.title, values: s.values.map((v) => v === null ? null : v * (spec.scale || 1)) }))
      .map((s) => ({ ...s, peak: Math.max(0, ...s.values.filter((v) => v !== null)) }))
      .sort((a, b) => b.peak - a.peak || a.label.localeCompare(b.label))
      .slice(0, MAX_LINES);
    box.dataset.points = String(series.reduce((n, s) => n + s.values.filter((v) => v !== null).length, 0));
    drawChart(box.querySelector('canvas'), history.timestamps, series, spec.unit);
    drawLegend(box.querySelector('.legend'), series);
  }
}

function drawLegend(legend, series) {
  legend.replaceChildren();
  series.forEach((s, i) => {
    const item = el('span', null);
    item.appendChild(el('i', null, 'swatch-' + i));
    item.appendChild(document.createTextNode(s.label));
    legend.appendChild(item);
  });
  if (!series.length) legend.appendChild(el('span', 'no data yet', 'muted'));
}

function niceMax(value) {
  if (!(value > 0)) return 1;
  const magnitude = Math.pow(10, Math.floor(Math.log10(value)));
  for (const step of [1, 2, 2.5, 5, 10]) if (step * magnitude >= value) return step * magnitude;
  return 10 * magnitude;
}

function drawChart(canvas, timestamps, series, unit) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || 400;
  const height = canvas.clientHeight || 160;
  canvas.width = Math.round(width * ratio);
  canvas.height = Math.round(height * ratio);
  const ctx = canvas.getContext('2d');
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, height);
  const left = 48, right = 8, top = 8, bottom = 18;
  const plotW = width - left - right, plotH = height - top - bottom;
  const max = niceMax(Math.max(0, ...series.map((s) => s.peak)));
  ctx.font = '10px system-ui, sans-serif';
  ctx.fillStyle = '#667';
  ctx.strokeStyle = '#e3e5ec';
  ctx.lineWidth = 1;
  for (let i = 0; i <= 4; i++) {
    const y = top + plotH - (plotH * i) / 4;
    ctx.beginPath(); ctx.moveTo(left, y + 0.5); ctx.lineTo(left + plotW, y + 0.5); ctx.stroke();
    const label = (max * i) / 4;
    ctx.fillText(label >= 100 ? label.toFixed(0) : label.toPrecision(2) + (i === 4 ? ' ' + unit : ''), 2, y + 3);
  }
  const n = timestamps.length;
  if (n > 1) {
    ctx.fillText(new Date(timestamps[0]).toLocaleTimeString(), left, height - 4);
    const last = new Date(timestamps[n - 1]).toLocaleTimeString();
    ctx.fillText(last, left + plotW - ctx.measureText(last).width, height - 4);
  }
  const x = (i) => left + (n > 1 ? (plotW * i) / (n - 1) : plotW);
  const y = (v) => top + plotH - (plotH * Math.min(v, max)) / max;
  series.forEach((s, k) => {
    ctx.strokeStyle = COLORS[k % COLORS.length];
    ctx.lineWidth = 1.5;
    ctx.beginPath();
    let drawing = false;
    s.values.forEach((v, i) => {
      if (v === null) { drawing = false; return; }
      if (drawing) ctx.lineTo(x(i), y(v)); else ctx.moveTo(x(i), y(v));
      drawing = true;
    });
    ctx.stroke();
    // A value with no neighbour (p99 of a quiet route) would draw nothing.
    ctx.fillStyle = ctx.strokeStyle;
    s.values.forEach((v, i) => {
      const alone = v !== null && (s.values[i - 1] ?? null) === null && (s.values[i + 1] ?? null) === null;
      if (alone) { ctx.beginPath(); ctx.arc(x(i), y(v), 2, 0, 2 * Math.PI); ctx.fill(); }
    });
  });
}

// ---- start ----------------------------------------------------------------

document.addEventListener('DOMContentLoaded', () => {
  $('token').value = sessionStorage.getItem(TOKEN_KEY) || '';
  $('login').addEventListener('submit', (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, token());
    connect();
  });
  connect();
});
