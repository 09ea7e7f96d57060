// The duehook console. It signs in with an admin token kept in this tab's
// sessionStorage, then reads and acts through the service's JSON API like any other
// client. Every value that comes from the service is written as text (textContent,
// text nodes, attribute values), never parsed as HTML.

const TOKEN_KEY = 'duehook.console.token';
// The API lives beside the console: `/admin/ui` → ``, `/duehook/admin/ui` → `/duehook`.
const ROOT = location.pathname.replace(/\/admin\/ui\/?$/, '');
const LOCAL_ZONE = Intl.DateTimeFormat().resolvedOptions().timeZone || 'local time';
const SVG_NS = 'http://www.w3.org/2000/svg';
const HOUR = 3600 * 1000;
const PAGE = 50;

const $ = (selector, root = document) => root.querySelector(selector);
const $$ = (selector, root = document) => Array.from(root.querySelectorAll(selector));

// ---------------------------------------------------------------------------------
// DOM helpers: elements built from parts; strings always become text nodes.

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  setAttrs(node, attrs);
  appendAll(node, children);
  return node;
}

function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  setAttrs(node, attrs);
  appendAll(node, children);
  return node;
}

function setAttrs(node, attrs) {
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') node.setAttribute('class', value);
    else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? '' : String(value));
  }
}

function appendAll(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
}

// Appends the children that are there (skipping null and undefined), strings as text.
function add(node, ...children) {
  appendAll(node, children);
  return node;
}

function clear(node) {
  node.replaceChildren();
  return node;
}

function badge(text, state = text) {
  return el('span', { class: `badge state-${String(state).replace(/[^a-z_]/gi, '')}` }, text);
}

function kv(label, value) {
  if (value === undefined || value === null || value === '') return null;
  return el('span', { class: 'kv' }, `${label} `, el('b', {}, value));
}

function emptyRow(tbody, columns, text) {
  clear(tbody).append(el('tr', {}, el('td', { class: 'empty', colspan: columns }, text)));
}

// ---------------------------------------------------------------------------------
// Time: every instant in UTC and in the browser's zone.

const utcFormat = new Intl.DateTimeFormat('en-GB', {
  timeZone: 'UTC', year: 'numeric', month: '2-digit', day: '2-digit',
  hour: '2-digit', minute: '2-digit', second: '2-digit', hourCycle: 'h23',
});
const localFormat = new Intl.DateTimeFormat(undefined, {
  year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit',
  second: '2-digit', timeZoneName: 'short',
});

function utcText(iso) {
  const parts = Object.fromEntries(utcFormat.formatToParts(new Date(iso)).map((p) => [p.type, p.value]));
  return `${parts.year}-${parts.month}-${parts.day} ${parts.hour}:${parts.minute}:${parts.second} UTC`;
}

function localText(iso) {
  return `${localFormat.format(new Date(iso))} (${LOCAL_ZONE})`;
}

// An instant as `<time>`: UTC, then the browser's zone; `note` (e.g. `in 3 h`) follows UTC.
function timeCell(iso, note) {
  if (!iso) return el('span', { class: 'muted' }, '—');
  return el('time', { datetime: iso, title: iso },
    el('span', { class: 'utc' }, utcText(iso), note ? el('span', { class: 'muted' }, ` · ${note}`) : null),
    el('span', { class: 'local' }, localText(iso)));
}

function duration(ms) {
  const s = Math.round(Math.abs(ms) / 1000);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.round(s / 60)} min`;
  if (s < 172800) return `${(s / 3600).toFixed(s < 36000 ? 1 : 0)} h`;
  return `${Math.round(s / 86400)} days`;
}

// `in 3.0 h`, `5 min ago`: an instant against the service's now.
function relative(ms) {
  if (Math.abs(ms) < 1000) return 'now';
  return ms > 0 ? `in ${duration(ms)}` : `${duration(ms)} ago`;
}

// ---------------------------------------------------------------------------------
// The API, with the token from sessionStorage.

class ApiFailure extends Error {
  constructor(status, code, detail, field) {
    super(detail || code || `HTTP ${status}`);
    this.status = status;
    this.code = code;
    this.field = field;
  }

  describe() {
    if (this.status === 0) return this.message;
    const field = this.field ? ` (${this.field})` : '';
    return `${this.status} ${this.code || 'error'}${field}: ${this.message}`;
  }
}

function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

async function call(method, path, body, bearer = token()) {
  const headers = { accept: 'application/json', authorization: `Bearer ${bearer}` };
  const init = { method, headers, cache: 'no-store', credentials: 'omit', referrerPolicy: 'no-referrer' };
  if (body !== undefined) {
    headers['content-type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(ROOT + path, init);
  } catch (e) {
    throw new ApiFailure(0, 'network', `The service did not answer (${e.message}).`);
  }
  let data = null;
  try {
    data = await res.json();
  } catch {
    data = null;
  }
  if (!res.ok) {
    throw new ApiFailure(res.status, data && data.error, data && data.detail, data && data.field);
  }
  return data;
}

async function api(method, path, body) {
  try {
    return await call(method, path, body);
  } catch (e) {
    if (e instanceof ApiFailure && e.status === 401) {
      signOut('The service refused the token (401). Sign in again.');
    }
    throw e;
  }
}

function q(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== '') search.set(key, value);
  }
  const text = search.toString();
  return text ? `?${text}` : '';
}

const enc = encodeURIComponent;

// A status line: loading, done (with a message) or failed (with the API's words).
async function withStatus(node, work, loading = 'Loading…') {
  node.className = 'status loading';
  node.textContent = loading;
  try {
    const message = await work();
    node.className = 'status';
    node.textContent = message || '';
    return true;
  } catch (e) {
    node.className = 'status error';
    node.textContent = e instanceof ApiFailure ? e.describe() : `Error: ${e.message}`;
    return false;
  }
}

// ---------------------------------------------------------------------------------
// Signing in and out.

function showLogin(message) {
  $('#view-login').hidden = false;
  $('#tabs').hidden = true;
  $('#session').hidden = true;
  for (const view of $$('section.view')) view.hidden = true;
  const error = $('#login-error');
  error.hidden = !message;
  error.textContent = message || '';
  $('#token').focus();
}

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  showLogin(message);
}

async function signIn(event) {
  event.preventDefault();
  const field = $('#token');
  const button = $('#login button[type=submit]');
  const candidate = field.value.trim();
  const error = $('#login-error');
  if (!candidate) return;
  button.disabled = true;
  error.hidden = true;
  try {
    await call('GET', '/admin/clock', undefined, candidate);
    sessionStorage.setItem(TOKEN_KEY, candidate);
    field.value = '';
    $('#view-login').hidden = true;
    route();
  } catch (e) {
    error.hidden = false;
    error.textContent = e instanceof ApiFailure && e.status === 401
      ? 'Wrong token: the service refused it (401). Use one of [auth] admin_tokens (or of [auth] tokens when no admin tokens are set).'
      : `Could not sign in: ${e instanceof ApiFailure ? e.describe() : e.message}`;
    field.select();
  } finally {
    button.disabled = false;
  }
}

// ---------------------------------------------------------------------------------
// Views and the hash router: #schedule, #story/KIND/ID, #endpoints, #deliveries, #clock.

const views = {
  schedule: () => loadSchedule(),
  story: (kind, id) => openStory(kind, id),
  endpoints: () => loadEndpoints(),
  deliveries: () => loadDeliveries(),
  clock: () => loadClock(),
};

function route() {
  if (!token()) {
    showLogin();
    return;
  }
  const [name, ...rest] = location.hash.slice(1).split('/');
  const view = Object.hasOwn(views, name) ? name : 'schedule';
  $('#view-login').hidden = true;
  $('#tabs').hidden = false;
  $('#session').hidden = false;
  for (const section of $$('section.view')) section.hidden = section.id !== `view-${view}`;
  for (const tab of $$('#tabs button')) {
    if (tab.dataset.view === view) tab.setAttribute('aria-current', 'page');
    else tab.removeAttribute('aria-current');
  }
  refreshChip();
  views[view](...rest.map((part) => {
    try {
      return decodeURIComponent(part);
    } catch {
      return part;
    }
  }));
}

function go(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
}

async function refreshChip() {
  try {
    const clock = await api('GET', '/admin/clock');
    const chip = clear($('#clock-chip'));
    add(chip, 'Now ', el('strong', {}, utcText(clock.now)), ` · ${clock.mode} clock`);
    chip.title = `The service's time: ${localText(clock.now)}`;
  } catch {
    // The views say what went wrong; the chip keeps its last value.
  }
}

// Endpoint names, for tables that only carry ids.
async function endpointNames() {
  try {
    const list = await api('GET', '/v1/endpoints');
    return new Map(list.endpoints.map((e) => [e.id, e.name]));
  } catch {
    return new Map();
  }
}

function endpointLabel(names, id) {
  const name = names.get(id);
  return name === undefined ? id : `${name} (${id})`;
}

function storyButton(kind, id) {
  return el('button', {
    type: 'button', class: 'link', onclick: () => go(`#story/${enc(kind)}/${enc(id)}`),
  }, `${kind} ${id}`);
}

// ---------------------------------------------------------------------------------
// Schedule: the forecast chart and the timers.

const schedule = { hours: 24, now: null, cursor: null, next: null, seq: 0 };

async function loadSchedule() {
  const seq = ++schedule.seq;
  const status = $('#schedule-status');
  await withStatus(status, async () => {
    const stats = await api('GET', '/admin/schedule/stats');
    if (seq !== schedule.seq) return status.textContent;
    schedule.now = stats.now;
    const types = [...new Set(stats.rules.map((r) => r.type))].sort();
    clear($('#event-types')).append(...types.map((t) => el('option', { value: t })));
    const [, shown] = await Promise.all([loadForecast(stats.now), loadTimers(seq)]);
    return shown;
  });
}

async function loadForecast(now) {
  const until = new Date(Date.parse(now) + schedule.hours * HOUR).toISOString();
  const f = await api('GET', `/admin/schedule/forecast${q({ until })}`);
  drawForecast(f, schedule.hours);
  return '';
}

function drawForecast(f, hours) {
  const start = Math.floor(Date.parse(f.now) / HOUR) * HOUR;
  const slots = Math.max(1, Math.ceil((Date.parse(f.until) - start) / HOUR));
  const types = Object.keys(f.by_type).sort();
  const colour = new Map(types.map((t, i) => [t, `t${i % 8}`]));
  const buckets = Array.from({ length: slots }, (_, i) => ({ at: start + i * HOUR, total: 0, byType: new Map() }));
  for (const hour of f.by_hour) {
    // Timers already due (the lag) count in the first hour; the last one takes `until`.
    const i = Math.min(slots - 1, Math.max(0, Math.round((Date.parse(hour.hour) - start) / HOUR)));
    for (const [type, n] of Object.entries(hour.by_type)) {
      buckets[i].byType.set(type, (buckets[i].byType.get(type) || 0) + n);
      buckets[i].total += n;
    }
  }
  const span = hours === 24 ? 'the next 24 hours' : 'the next 7 days';
  $('#forecast-caption').textContent = f.total === 0
    ? `Nothing is due to fire in ${span}.`
    : `${f.total} timer${f.total === 1 ? '' : 's'} will fire in ${span}, per hour (UTC), by event type.`;

  const W = 960;
  const H = 170;
  const left = 36;
  const bottom = 24;
  const top = 8;
  const plotW = W - left - 8;
  const plotH = H - top - bottom;
  const max = Math.max(1, ...buckets.map((b) => b.total));
  const step = plotW / slots;
  const chart = svg('svg', {
    viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-labelledby': 'forecast-caption', id: 'forecast-svg',
  });
  chart.append(svg('line', { class: 'axis', x1: left, y1: top + plotH, x2: W - 8, y2: top + plotH }));
  for (const value of new Set([0, Math.round(max / 2), max])) {
    const y = top + plotH - (plotH * value) / max;
    chart.append(svg('text', { x: left - 6, y: y + 4, 'text-anchor': 'end' }, String(value)));
    if (value > 0) chart.append(svg('line', { class: 'axis', x1: left, y1: y, x2: W - 8, y2: y, 'stroke-dasharray': '2 4' }));
  }
  buckets.forEach((b, i) => {
    const x = left + i * step;
    const group = svg('g', { class: 'bar' });
    const parts = [...b.byType.entries()].sort(([a], [c]) => a.localeCompare(c));
    const iso = new Date(b.at).toISOString();
    const label = `${utcText(iso)} (${localText(iso)}): ${b.total}` +
      (parts.length ? ` — ${parts.map(([t, n]) => `${t} ${n}`).join(', ')}` : '');
    group.append(svg('title', {}, label));
    let y = top + plotH;
    for (const [type, n] of parts) {
      const h = (plotH * n) / max;
      y -= h;
      group.append(svg('rect', {
        class: colour.get(type) || 't7', x: x + step * 0.12, y, width: Math.max(1, step * 0.76), height: h,
      }));
    }
    // An invisible full-height target so the hour's title shows on hover anywhere.
    group.append(svg('rect', { x, y: top, width: step, height: plotH, 'fill-opacity': 0 }));
    chart.append(group);
    const d = new Date(b.at);
    const every = hours <= 24 ? 3 : 24;
    if (d.getUTCHours() % every === 0) {
      const text = hours <= 24
        ? `${String(d.getUTCHours()).padStart(2, '0')}:00`
        : d.toLocaleDateString('en-GB', { timeZone: 'UTC', day: 'numeric', month: 'short' });
      chart.append(svg('text', { x: x + step / 2, y: H - 6, 'text-anchor': 'middle' }, text));
    }
  });
  clear($('#forecast-plot')).append(chart);
  const legend = clear($('#forecast-legend'));
  for (const type of types) {
    legend.append(el('li', {}, el('span', { class: `swatch ${colour.get(type)}` }), `${type}: ${f.by_type[type]}`));
  }
}

function timerQuery(cursor) {
  const form = new FormData($('#schedule-filter'));
  const now = Date.parse(schedule.now);
  const at = (offset) => new Date(now + offset * HOUR).toISOString();
  const range = {
    upcoming: { from: at(0) },
    24: { from: at(0), to: at(24) },
    168: { from: at(0), to: at(168) },
    '-24': { from: at(-24), to: at(0) },
    all: {},
  }[form.get('window')] || {};
  return q({
    type: form.get('type').trim(),
    entity_kind: form.get('entity_kind'),
    entity_id: form.get('entity_id').trim(),
    state: form.get('state'),
    ...range,
    limit: PAGE,
    cursor,
  });
}

async function loadTimers(seq = schedule.seq) {
  const page = await api('GET', `/admin/schedule${timerQuery(schedule.cursor)}`);
  if (seq !== schedule.seq) return $('#schedule-status').textContent;
  schedule.next = page.next_cursor || null;
  $('#schedule-next').disabled = !schedule.next;
  $('#schedule-first').disabled = !schedule.cursor;
  const tbody = $('#schedule-table tbody');
  if (page.timers.length === 0) {
    emptyRow(tbody, 6, 'No timers match these filters.');
    return '';
  }
  const now = Date.parse(schedule.now);
  clear(tbody).append(...page.timers.map((t) => el('tr', { 'data-timer': t.id },
    el('td', {}, timeCell(t.fire_at, relative(Date.parse(t.fire_at) - now))),
    el('td', {}, t.type),
    el('td', {}, storyButton(t.entity_kind, t.entity_id)),
    el('td', {}, badge(t.state)),
    el('td', {}, t.reason || ''),
    el('td', {}, t.rule))));
  const n = page.timers.length;
  return `${n} timer${n === 1 ? '' : 's'}${schedule.next ? ' on this page; more on the next' : ''}, by time of firing.`;
}

async function pageTimers(cursor) {
  schedule.cursor = cursor;
  const seq = ++schedule.seq;
  await withStatus($('#schedule-status'), () => loadTimers(seq));
}

// ---------------------------------------------------------------------------------
// An entity's story: its changes, timers, events, deliveries and attempts.

const story = { seq: 0 };

function openStory(kind, id) {
  const form = $('#story-form');
  if (kind) form.elements.kind.value = kind;
  if (id !== undefined) form.elements.id.value = id;
  if (kind && id) loadStory(kind, id);
  else form.elements.id.focus();
}

async function loadStory(kind, id) {
  const seq = ++story.seq;
  const table = $('#story-table');
  const subject = $('#story-subject');
  await withStatus($('#story-status'), async () => {
    let timeline;
    let names;
    try {
      [timeline, names] = await Promise.all([
        api('GET', `/admin/entities/${enc(kind)}/${enc(id)}/timeline`),
        endpointNames(),
      ]);
    } catch (e) {
      if (seq === story.seq) {
        table.hidden = true;
        subject.hidden = true;
      }
      throw e;
    }
    if (seq !== story.seq) return '';
    subject.hidden = false;
    subject.textContent = `${kind} ${id}`;
    table.hidden = false;
    const tbody = clear($('tbody', table));
    for (const entry of timeline.timeline) tbody.append(storyRow(entry, names, kind, id));
    const n = timeline.timeline.length;
    return `${n} entr${n === 1 ? 'y' : 'ies'}, oldest first.`;
  });
}

function storyRow(e, names, kind, id) {
  const what = e.what;
  const short = what.split('.')[1] || what;
  const details = el('div', { class: 'details' });
  if (what.startsWith('event.')) {
    add(details, 
      kv('event', e.type),
      kv('id', e.event_id),
      e.scheduled_at ? kv('scheduled for', utcText(e.scheduled_at)) : null,
      el('details', {}, el('summary', {}, 'data'), el('pre', {}, JSON.stringify(e.data, null, 2))));
  } else if (what === 'timer.planned') {
    add(details, kv('timer', e.type), kv('rule', e.rule), kv('fires at', utcText(e.fire_at)));
  } else if (what.startsWith('timer.')) {
    add(details, 
      kv('timer', e.type),
      kv('due', utcText(e.fire_at)),
      kv('reason', e.reason),
      kv('event', e.event_id));
  } else if (what === 'delivery.attempt') {
    const answer = e.status_code !== null && e.status_code !== undefined
      ? `HTTP ${e.status_code}`
      : `no answer (${e.error_kind || 'error'})`;
    add(details, 
      kv('endpoint', endpointLabel(names, e.endpoint_id)),
      kv(`attempt ${e.attempt}`, `${answer} in ${e.duration_ms} ms`),
      kv('error', e.error),
      kv('delivery', e.delivery_id));
    if (e.response_excerpt) {
      add(details, el('span', { class: 'kv' }, 'response (first bytes)'), el('pre', {}, e.response_excerpt));
    }
  } else if (what.startsWith('delivery.')) {
    add(details, 
      kv('endpoint', endpointLabel(names, e.endpoint_id)),
      kv('attempts', String(e.attempts)),
      e.next_attempt_at ? kv('next attempt', utcText(e.next_attempt_at)) : null,
      kv('delivery', e.delivery_id));
    if (short === 'failed') {
      const button = el('button', { type: 'button', class: 'small' }, 'Retry');
      button.addEventListener('click', async () => {
        button.disabled = true;
        const ok = await withStatus($('#story-status'), async () => {
          await api('POST', `/v1/deliveries/${enc(e.delivery_id)}/retry`);
          await settle(e.delivery_id);
          return '';
        }, 'Retrying…');
        if (ok) loadStory(kind, id);
        else button.disabled = false;
      });
      add(details, el('div', { class: 'actions' }, button));
    }
  }
  return el('tr', { 'data-what': what },
    el('td', {}, timeCell(e.at)),
    el('td', {}, badge(what, short)),
    el('td', {}, details));
}

// Waits (up to about 30 s) for a retried delivery to leave `pending`.
async function settle(id) {
  let d = null;
  for (let i = 0; i < 30; i += 1) {
    d = await api('GET', `/v1/deliveries/${enc(id)}`);
    if (d.status !== 'pending') return d;
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
  return d;
}

// ---------------------------------------------------------------------------------
// Endpoints: state, success rate, pending, last error; enable, disable, test.

async function loadEndpoints(message) {
  await withStatus($('#endpoints-status'), async () => {
    const [health, list] = await Promise.all([
      api('GET', '/admin/endpoints/health'),
      api('GET', '/v1/endpoints'),
    ]);
    const urls = new Map(list.endpoints.map((e) => [e.id, e.url]));
    const tbody = $('#endpoints-table tbody');
    if (health.endpoints.length === 0) {
      emptyRow(tbody, 6, 'No endpoints yet (POST /v1/endpoints).');
      return message;
    }
    clear(tbody).append(...health.endpoints.map((h) => endpointRow(h, urls.get(h.endpoint_id))));
    return message;
  });
}

function endpointRow(h, url) {
  const rate = h.success_rate === null || h.success_rate === undefined
    ? el('span', { class: 'muted' }, 'no attempts')
    : el('span', { class: h.success_rate >= 0.99 ? 'ok' : h.success_rate >= 0.8 ? 'warn' : 'bad' },
      `${(h.success_rate * 100).toFixed(h.success_rate === 1 ? 0 : 1)} %`, el('span', { class: 'muted' }, ` of ${h.attempts}`));
  const enabled = h.state === 'enabled';
  const toggle = el('button', { type: 'button', class: 'small quiet' }, enabled ? 'Disable' : 'Enable');
  toggle.addEventListener('click', () => endpointAction(toggle, h, enabled ? 'disable' : 'enable'));
  const test = el('button', { type: 'button', class: 'small quiet' }, 'Send test');
  test.disabled = !enabled;
  test.addEventListener('click', () => endpointAction(test, h, 'test'));
  return el('tr', { 'data-endpoint': h.endpoint_id },
    el('td', {}, el('div', { class: 'details' },
      el('strong', {}, h.name),
      url ? el('span', { class: 'muted mono' }, url) : null,
      el('span', { class: 'muted mono' }, h.endpoint_id))),
    el('td', {}, el('div', { class: 'details' },
      badge(h.state),
      h.alert_state !== 'ok' ? kv('alert', h.alert_state) : null,
      kv('why', h.disabled_reason))),
    el('td', {}, rate),
    el('td', {}, String(h.pending)),
    el('td', {}, h.last_error
      ? el('div', { class: 'details' }, el('span', { class: 'bad' }, h.last_error), timeCell(h.last_error_at))
      : el('span', { class: 'muted' }, 'none')),
    el('td', {}, el('div', { class: 'actions' }, toggle, test)));
}

async function endpointAction(button, h, action) {
  button.disabled = true;
  let message = '';
  const ok = await withStatus($('#endpoints-status'), async () => {
    const r = await api('POST', `/v1/endpoints/${enc(h.endpoint_id)}/${action}`);
    message = action === 'test'
      ? `Sent a test event to ${h.name} (delivery ${r.delivery_id}).`
      : `${h.name} is ${action}d.`;
    return message;
  }, 'Working…');
  if (ok) await loadEndpoints(message);
  else button.disabled = false;
}

// ---------------------------------------------------------------------------------
// Deliveries: failed and pending, their attempts, and retry.

async function loadDeliveries() {
  await withStatus($('#deliveries-status'), async () => {
    const [names, failed, pending] = await Promise.all([
      endpointNames(),
      api('GET', `/v1/deliveries${q({ status: 'failed', limit: PAGE })}`),
      api('GET', `/v1/deliveries${q({ status: 'pending', limit: PAGE })}`),
    ]);
    fillDeliveries($('#deliveries-failed tbody'), failed.deliveries, names, true);
    fillDeliveries($('#deliveries-pending tbody'), pending.deliveries, names, false);
    const more = failed.next_cursor || pending.next_cursor ? ` (the newest ${PAGE} of each shown)` : '';
    return `${failed.deliveries.length} failed, ${pending.deliveries.length} pending${more}.`;
  });
}

function lastAnswer(d) {
  if (d.last_status !== null && d.last_status !== undefined) return `HTTP ${d.last_status}`;
  return d.last_error || '—';
}

function fillDeliveries(tbody, list, names, failed) {
  if (list.length === 0) {
    emptyRow(tbody, 6, failed ? 'No failed deliveries.' : 'Nothing waits to be sent.');
    return;
  }
  clear(tbody);
  for (const d of list) {
    const row = el('tr', { 'data-delivery': d.id });
    const attemptsRow = el('tr', { class: 'attempts', hidden: true }, el('td', { colspan: 6 }));
    const show = el('button', { type: 'button', class: 'small quiet', 'aria-expanded': 'false' }, 'Attempts');
    show.addEventListener('click', () => toggleAttempts(show, attemptsRow, d.id));
    const actions = el('div', { class: 'actions' }, show);
    const outcome = el('div', { class: 'details' }, badge(d.status), el('span', {}, lastAnswer(d)));
    if (failed) {
      const retry = el('button', { type: 'button', class: 'small' }, 'Retry');
      retry.addEventListener('click', () => retryDelivery(retry, d, outcome, show, attemptsRow));
      actions.append(retry);
    }
    row.append(
      el('td', {}, timeCell(d.created_at)),
      el('td', {}, el('div', { class: 'details' }, el('span', {}, d.event_type), el('span', { class: 'muted mono' }, d.event_id))),
      el('td', {}, endpointLabel(names, d.endpoint_id)),
      el('td', {}, String(d.attempt_count)),
      el('td', {}, failed ? outcome : timeCell(d.next_attempt_at)),
      el('td', {}, actions));
    tbody.append(row, attemptsRow);
  }
}

async function toggleAttempts(button, row, id) {
  const open = button.getAttribute('aria-expanded') === 'true';
  if (open) {
    button.setAttribute('aria-expanded', 'false');
    row.hidden = true;
    return;
  }
  button.setAttribute('aria-expanded', 'true');
  row.hidden = false;
  await fillAttempts(row, id);
}

async function fillAttempts(row, id) {
  const cell = clear(row.firstChild);
  const status = el('p', { class: 'status', role: 'status' });
  cell.append(status);
  await withStatus(status, async () => {
    const d = await api('GET', `/v1/deliveries/${enc(id)}`);
    if (d.attempts.length === 0) return 'No attempt yet.';
    const table = el('table', {},
      el('thead', {}, el('tr', {}, ['#', 'Started', 'Answer', 'Duration', 'Error', 'Response (first bytes)']
        .map((h) => el('th', { scope: 'col' }, h)))),
      el('tbody', {}, d.attempts.map((a) => el('tr', {},
        el('td', {}, String(a.number)),
        el('td', {}, timeCell(a.started_at)),
        el('td', {}, a.status_code !== null && a.status_code !== undefined ? `HTTP ${a.status_code}` : (a.error_kind || 'no answer')),
        el('td', {}, `${a.duration_ms} ms`),
        el('td', {}, a.error || ''),
        el('td', {}, a.response_body ? el('pre', {}, a.response_body.slice(0, 256)) : '')))));
    cell.append(table);
    return '';
  });
}

async function retryDelivery(button, d, outcome, show, attemptsRow) {
  button.disabled = true;
  const ok = await withStatus($('#deliveries-status'), async () => {
    await api('POST', `/v1/deliveries/${enc(d.id)}/retry`);
    clear(outcome).append(badge('pending'), el('span', {}, 'retrying…'));
    const after = await settle(d.id);
    clear(outcome).append(badge(after.status), el('span', {}, lastAnswer(after)));
    if (show.getAttribute('aria-expanded') === 'true') await fillAttempts(attemptsRow, d.id);
    return after.status === 'pending'
      ? `Delivery ${d.id} is still pending; it will be attempted on its schedule.`
      : `Delivery ${d.id} ${after.status} on attempt ${after.attempt_count} (${lastAnswer(after)}).`;
  }, 'Retrying…');
  if (!ok) button.disabled = false;
}

// ---------------------------------------------------------------------------------
// The clock and the nodes.

async function loadClock(message) {
  await withStatus($('#clock-status'), async () => {
    const [stats, nodes] = await Promise.all([
      api('GET', '/admin/schedule/stats'),
      api('GET', '/admin/nodes'),
    ]);
    const facts = clear($('#clock-facts'));
    const fact = (label, ...value) => add(facts, el('div', {}, el('dt', {}, label), el('dd', {}, ...value)));
    fact('Service time', timeCell(stats.now));
    fact('Clock', stats.clock);
    fact('Next fire', timeCell(stats.next_fire_at));
    fact('Lag', stats.lag_ms > 0 ? el('span', { class: 'warn' }, duration(stats.lag_ms)) : 'none');
    for (const state of ['pending', 'fired', 'cancelled', 'skipped']) {
      fact(`Timers ${state}`, String(stats.timers[state] || 0));
    }
    fact('In this node’s wheel', String(stats.in_wheel));
    fact('Fired since start', `${stats.fired_since_start} (late ${stats.fired_late_since_start})`);
    $('#clock-controls').hidden = stats.clock !== 'manual';
    const tbody = $('#nodes-table tbody');
    if (nodes.nodes.length === 0) emptyRow(tbody, 5, 'No node has registered.');
    else {
      clear(tbody).append(...nodes.nodes.map((n) => el('tr', {},
        el('td', {}, el('span', { class: 'mono' }, n.id), n.stopped_at ? el('div', { class: 'muted' }, 'stopped') : null),
        el('td', {}, `${n.hostname} (${n.pid})`),
        el('td', {}, timeCell(n.started_at)),
        el('td', {}, timeCell(n.last_seen)),
        el('td', {}, String(n.timers_held)))));
    }
    return message;
  });
}

async function advance(body) {
  const buttons = $$('#clock-controls button');
  for (const b of buttons) b.disabled = true;
  const status = $('#advance-status');
  let moved = null;
  await withStatus(status, async () => {
    moved = await api('POST', '/admin/clock/advance', body);
    return `The clock moved from ${utcText(moved.from)} to ${utcText(moved.now)}, stopping at ${moved.steps} instant${moved.steps === 1 ? '' : 's'} on the way.`;
  }, 'Advancing: every timer on the way fires in order…');
  for (const b of buttons) b.disabled = false;
  if (!moved) return;
  const to = new Date(Date.parse(moved.now) + 1).toISOString();
  const fired = await api('GET', `/admin/schedule${q({ state: 'fired', from: moved.from, to, limit: 200 })}`).catch(() => null);
  const tbody = $('#fired-table tbody');
  $('#fired').hidden = false;
  if (!fired || fired.timers.length === 0) emptyRow(tbody, 5, 'No timer was due on the way.');
  else {
    clear(tbody).append(...fired.timers.map((t) => el('tr', { 'data-timer': t.id },
      el('td', {}, timeCell(t.fire_at)),
      el('td', {}, t.type),
      el('td', {}, storyButton(t.entity_kind, t.entity_id)),
      el('td', {}, badge(t.state)),
      el('td', {}, t.reason || ''))));
  }
  await Promise.all([loadClock(), refreshChip()]);
}

// ---------------------------------------------------------------------------------
// Wiring.

function wire() {
  $('#login').addEventListener('submit', signIn);
  $('#sign-out').addEventListener('click', () => signOut());
  for (const tab of $$('#tabs button')) {
    tab.addEventListener('click', () => go(`#${tab.dataset.view}`));
  }
  for (const button of $$('.toggle button')) {
    button.addEventListener('click', async () => {
      schedule.hours = Number(button.dataset.hours);
      for (const b of $$('.toggle button')) b.setAttribute('aria-pressed', String(b === button));
      // The status line keeps what it says about the timers below.
      const said = $('#schedule-status').textContent;
      await withStatus($('#schedule-status'), async () => {
        await loadForecast(schedule.now);
        return said;
      });
    });
  }
  $('#schedule-filter').addEventListener('submit', (event) => {
    event.preventDefault();
    schedule.cursor = null;
    loadSchedule();
  });
  $('#schedule-next').addEventListener('click', () => pageTimers(schedule.next));
  $('#schedule-first').addEventListener('click', () => pageTimers(null));
  $('#story-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const form = event.target;
    go(`#story/${enc(form.elements.kind.value)}/${enc(form.elements.id.value.trim())}`);
  });
  $('#endpoints-refresh').addEventListener('click', () => loadEndpoints());
  $('#deliveries-refresh').addEventListener('click', () => loadDeliveries());
  $('#clock-refresh').addEventListener('click', () => loadClock());
  for (const button of $$('[data-advance]')) {
    button.addEventListener('click', () => advance({ seconds: Number(button.dataset.advance) }));
  }
  $('#advance-to').addEventListener('submit', (event) => {
    event.preventDefault();
    advance({ to: event.target.elements.to.value.trim() });
  });
  window.addEventListener('hashchange', route);
  // The service's time in the header, while the tab is open.
  setInterval(() => {
    if (token() && !document.hidden) refreshChip();
  }, 30000);
}

async function start() {
  wire();
  const saved = token();
  if (!saved) {
    showLogin();
    return;
  }
  try {
    await call('GET', '/admin/clock', undefined, saved);
    route();
  } catch (e) {
    if (e instanceof ApiFailure && e.status === 401) signOut('The saved token no longer opens the service. Sign in again.');
    else showLogin(`The service did not answer: ${e instanceof ApiFailure ? e.describe() : e.message}`);
  }
}

start();
