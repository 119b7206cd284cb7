// shadowproxy dashboard: polls the admin JSON API and renders one route at a
// time. Plain DOM, no framework, no network beyond this listener.
//
// Everything shown comes from the API, and field paths and values come from
// upstream responses, so they are hostile: every piece of data goes into the
// page as a text node or an attribute value (setAttribute escapes), never as
// markup. The Content-Security-Policy forbids inline script as a second line.
'use strict';

(function () {
  const POLL_MS = 2000;
  const HOUR_MS = 3600 * 1000;
  const TOKEN_KEY = 'shadowproxy.admin-token';
  const SVG_NS = 'http://www.w3.org/2000/svg';
  const DIFF_LIMIT = 20;
  // Colour per shadow target, and the primary's, in chart order.
  const TARGET_COLOURS = ['#e8590c', '#7048e8', '#0c8599', '#c2255c', '#5c940d'];
  const PRIMARY_COLOUR = '#1c7ed6';

  const state = {
    routes: [],
    rollouts: [],
    selected: decodeHash(),
    field: '',
    diffs: null,
    diffsError: '',
    history: null, // {route, points, local}
    historySupported: true,
    historyRetryAt: 0,
    local: {}, // route -> points collected by this page (fallback history)
    armed: '', // rollout action waiting for its confirming second click
    fleet: null, // GET /api/v1/fleet, null outside fleet mode
    scope: 'instance', // or 'fleet': which numbers the fleet panel shows
    fleetRoutes: null, // GET /api/v1/routes?scope=fleet
  };

  // ---- small DOM helpers -------------------------------------------------

  // el builds an element; string children become text nodes, so data can
  // never become markup.
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    setAttrs(node, attrs);
    append(node, children);
    return node;
  }

  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(SVG_NS, tag);
    setAttrs(node, attrs);
    append(node, children);
    return node;
  }

  function setAttrs(node, attrs) {
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      node.setAttribute(k, String(v));
    }
  }

  function append(node, children) {
    for (const c of children.flat(Infinity)) {
      if (c === undefined || c === null || c === false) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
  }

  function $(id) { return document.getElementById(id); }

  function fill(id, ...children) {
    const node = $(id);
    node.replaceChildren();
    append(node, children);
  }

  // ---- formatting ---------------------------------------------------------

  function pct(v, digits) {
    if (v === null || v === undefined || Number.isNaN(v)) return '—';
    return (v * 100).toFixed(digits === undefined ? 1 : digits) + '%';
  }

  function num(v) {
    if (v === null || v === undefined) return '—';
    return Number(v).toLocaleString('en-US', {maximumFractionDigits: 2});
  }

  function secs(s) {
    if (s === null || s === undefined || Number.isNaN(s)) return '—';
    if (s === 0) return '0';
    if (s < 0.001) return (s * 1e6).toFixed(0) + 'µs';
    if (s < 1) return (s * 1000).toFixed(s < 0.01 ? 2 : 1) + 'ms';
    return s.toFixed(2) + 's';
  }

  function span(s) {
    if (s === null || s === undefined) return '—';
    s = Math.max(0, Math.round(s));
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
    if (h) return h + 'h ' + m + 'm';
    if (m) return m + 'm ' + r + 's';
    return r + 's';
  }

  function clock(t) {
    const d = new Date(t);
    if (Number.isNaN(d.getTime())) return String(t);
    return d.toLocaleTimeString('en-GB', {hour12: false});
  }

  function decodeHash() {
    try {
      return decodeURIComponent(location.hash.slice(1));
    } catch (e) {
      return '';
    }
  }

  // ---- API access with the admin token -------------------------------------

  let tokenWaiters = [];

  // askToken shows the token form and resolves once a token is entered.
  function askToken(message) {
    $('auth').hidden = false;
    $('auth-error').textContent = message || '';
    $('token').focus();
    return new Promise((resolve) => tokenWaiters.push(resolve));
  }

  $('auth').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const tok = $('token').value.trim();
    if (!tok) return;
    sessionStorage.setItem(TOKEN_KEY, tok);
    $('token').value = '';
    $('auth').hidden = true;
    const waiters = tokenWaiters;
    tokenWaiters = [];
    waiters.forEach((w) => w());
  });

  // api calls the admin API. A 401 asks for the token (kept in
  // sessionStorage: gone when the tab closes) and retries with it.
  async function api(path, method) {
    for (;;) {
      const headers = {Accept: 'application/json'};
      const tok = sessionStorage.getItem(TOKEN_KEY);
      if (tok) headers.Authorization = 'Bearer ' + tok;
      const resp = await fetch(path, {method: method || 'GET', headers, cache: 'no-store', credentials: 'same-origin'});
      const text = await resp.text();
      let body = null;
      try {
        body = text ? JSON.parse(text) : null;
      } catch (e) {
        body = {error: text.trim()};
      }
      if (resp.status === 401) {
        if (tok) sessionStorage.removeItem(TOKEN_KEY);
        const why = body && body.error ? body.error : 'unauthorized';
        await askToken(tok ? 'The token was refused: ' + why : why);
        continue;
      }
      return {status: resp.status, ok: resp.ok, body};
    }
  }

  function errorText(r) {
    if (r.body && r.body.error) {
      const details = Array.isArray(r.body.details) ? ': ' + r.body.details.join('; ') : '';
      return r.body.error + details;
    }
    return 'HTTP ' + r.status;
  }

  // ---- polling ------------------------------------------------------------

  let timer = null, running = false, again = false;

  // refresh polls now (or right after a poll in progress).
  function refresh() {
    if (running) {
      again = true;
      return;
    }
    clearTimeout(timer);
    running = true;
    poll().finally(() => {
      running = false;
      timer = setTimeout(refresh, again ? 0 : POLL_MS);
      again = false;
    });
  }

  async function poll() {
    if (document.hidden && state.routes.length) return; // nothing to show: save the work
    try {
      const r = await api('/api/v1/routes');
      if (!r.ok) throw new Error(errorText(r));
      state.routes = Array.isArray(r.body) ? r.body : [];
      recordLocal();
      const ro = await api('/api/v1/rollouts');
      state.rollouts = ro.ok && Array.isArray(ro.body) ? ro.body : [];
      await loadFleet();
      const route = chooseRoute();
      if (route && route.comparison) {
        await loadHistory(route.route);
        await loadDiffs(route.route);
      } else {
        state.history = null;
        state.diffs = null;
      }
      render();
      fill('status', 'updated ' + clock(Date.now()));
      $('status').className = '';
    } catch (e) {
      fill('status', 'cannot reach the admin API: ' + e.message);
      $('status').className = 'error';
    }
  }

  // loadFleet reads the fleet's view (404 outside fleet mode) and, when the
  // Fleet switch is on, the routes merged over every member.
  async function loadFleet() {
    const f = await api('/api/v1/fleet');
    state.fleet = f.ok && f.body && typeof f.body === 'object' ? f.body : null;
    state.fleetRoutes = null;
    if (state.fleet && state.scope === 'fleet') {
      const fr = await api('/api/v1/routes?scope=fleet');
      state.fleetRoutes = fr.ok ? fr.body : null;
    }
  }

  function chooseRoute() {
    const names = state.routes.map((r) => r.route);
    if (!names.includes(state.selected)) {
      // Default to the first route that has something to compare.
      const withCmp = state.routes.find((r) => r.comparison || r.rollout || r.split);
      state.selected = withCmp ? withCmp.route : (names[0] || '');
    }
    return state.routes.find((r) => r.route === state.selected) || null;
  }

  async function loadHistory(route) {
    if (state.historySupported || Date.now() >= state.historyRetryAt) {
      const h = await api('/api/v1/history?route=' + encodeURIComponent(route));
      if (h.ok && h.body && Array.isArray(h.body.points)) {
        state.historySupported = true;
        if (h.body.points.length) {
          state.history = {route, points: h.body.points, local: false};
          return;
        }
        // The proxy has not closed its first interval yet: show what this
        // page has seen meanwhile rather than an empty chart.
      }
      if (h.status === 404 && !(h.body && /route/i.test(h.body.error || ''))) {
        // An older proxy without the history endpoint: chart what this page
        // has seen since it opened, and ask again in a minute.
        state.historySupported = false;
        state.historyRetryAt = Date.now() + 60000;
      }
    }
    state.history = {route, points: state.local[route] || [], local: true};
  }

  // recordLocal keeps the last hour of each route's 1-minute match rate and
  // latency quantiles, as seen by this page, for proxies without history.
  function recordLocal() {
    const now = Date.now();
    const t = new Date(now).toISOString();
    for (const r of state.routes) {
      if (!r.comparison) continue;
      const pts = state.local[r.route] || (state.local[r.route] = []);
      for (const tg of r.comparison.targets || []) {
        const l = tg.latency || {};
        const p = l.primary || {}, s = l.shadow || {};
        pts.push({
          time: t, target: tg.target, match_rate: tg.match_rate_1m,
          comparisons: tg.counts_1m ? tg.counts_1m.match + tg.counts_1m.mismatch + tg.counts_1m.uncomparable : null,
          primary_p50: p.count ? p.p50 : null, primary_p95: p.count ? p.p95 : null, primary_p99: p.count ? p.p99 : null,
          shadow_p50: s.count ? s.p50 : null, shadow_p95: s.count ? s.p95 : null, shadow_p99: s.count ? s.p99 : null,
        });
      }
      while (pts.length && now - Date.parse(pts[0].time) > HOUR_MS) pts.shift();
    }
  }

  async function loadDiffs(route) {
    let q = '/api/v1/diffs?route=' + encodeURIComponent(route) + '&limit=' + DIFF_LIMIT;
    if (state.field) q += '&field=' + encodeURIComponent(state.field);
    const d = await api(q);
    state.diffs = d.ok && Array.isArray(d.body) ? d.body : [];
    state.diffsError = d.ok ? '' : errorText(d);
  }

  // ---- rendering ------------------------------------------------------------

  function render() {
    renderNav();
    const route = state.routes.find((r) => r.route === state.selected);
    renderFleet(route);
    if (!route) {
      fill('overview', el('p', {class: 'muted'}, 'No routes configured.'));
      return;
    }
    renderOverview(route);
    renderSplit(route);
    renderRollout(route);
    renderCharts(route);
    renderOutcomes(route);
    renderFields(route);
    renderNoise(route);
    renderDiffs(route);
  }

  // renderFleet shows this member's place in the fleet (and says loudly
  // when etcd is unreachable), and the fleet-wide numbers of the route when
  // the switch says Fleet.
  function renderFleet(route) {
    const f = state.fleet;
    $('fleet').hidden = !f;
    const panel = $('fleet-panel');
    if (!f) {
      panel.hidden = true;
      return;
    }
    const down = f.etcd !== 'up';
    $('fleet').className = down ? 'error' : '';
    const hold = route && f.holds ? f.holds[route.route] : '';
    fill('fleet-info', 'fleet member ', el('strong', {}, String(f.name || '')),
      ' · leader ', el('strong', {}, String(f.leader || 'none')),
      ' · ' + (f.members || []).length + ' members · etcd ',
      el('strong', {id: 'fleet-etcd'}, String(f.etcd || '')),
      down ? ' — serving the last known shares; no rollout transitions until etcd returns' : '',
      hold ? el('span', {class: 'error', id: 'fleet-hold'}, ' · leader holds: ' + hold) : null);
    panel.hidden = state.scope !== 'fleet';
    if (panel.hidden) return;
    const fr = state.fleetRoutes;
    const r = fr && route ? (fr.routes || []).find((x) => x.route === route.route) : null;
    if (!r) {
      fill('fleet-routes', el('p', {class: 'muted'}, 'No fleet numbers for this route yet.'));
      return;
    }
    const rows = (r.comparison || []).map((c) => el('tr', {'data-target': c.target},
      el('td', {}, c.target),
      el('td', {}, num(c.counts.match + c.counts.mismatch + c.counts.uncomparable)),
      el('td', {}, pct(c.match_rate_1m)), el('td', {}, pct(c.match_rate_5m)), el('td', {}, pct(c.match_rate_total))));
    fill('fleet-routes',
      el('p', {}, 'requests ', el('strong', {id: 'fleet-requests'}, num(r.requests)),
        ' from ' + (fr.answered || []).join(', ')),
      (fr.missing || []).length ? el('p', {class: 'error'}, 'not answering: ' +
        fr.missing.map((m) => m.name + ' (' + m.error + ')').join(', ')) : null,
      rows.length ? el('table', {},
        el('thead', {}, el('tr', {}, el('th', {}, 'shadow target'), el('th', {}, 'comparisons'),
          el('th', {}, 'match 1m'), el('th', {}, 'match 5m'), el('th', {}, 'match total'))),
        el('tbody', {}, rows)) : null);
  }

  function renderNav() {
    fill('routes', state.routes.map((r) => el('a', {
      href: '#' + encodeURIComponent(r.route),
      class: r.route === state.selected ? 'current' : null,
      'aria-current': r.route === state.selected ? 'page' : null,
    }, r.route, r.comparison ? el('span', {class: 'tag'}, 'shadow') : null,
    r.split ? el('span', {class: 'tag'}, 'split') : null)));
  }

  function card(label, value, attrs) {
    return el('div', Object.assign({class: 'card'}, attrs || {}), el('div', {class: 'label'}, label), el('div', {class: 'value'}, value));
  }

  function renderOverview(route) {
    const cards = [card('route', route.route), card('stable upstream', route.upstream), card('requests', num(route.requests))];
    const cmp = route.comparison;
    if (cmp) {
      for (const t of cmp.targets || []) {
        const rate = t.match_rate_1m !== null && t.match_rate_1m !== undefined ? t.match_rate_1m : t.match_rate_total;
        const window = t.match_rate_1m !== null && t.match_rate_1m !== undefined ? '1m' : 'total';
        cards.push(card('match rate ' + t.target + ' (' + window + ')', pct(rate),
          {class: 'card match-rate ' + rateClass(rate), 'data-target': t.target}));
        cards.push(card('comparisons ' + t.target,
          num(t.counts.match) + ' ✓  ' + num(t.counts.mismatch) + ' ✗  ' + num(t.counts.uncomparable) + ' ?'));
      }
      const noisy = (cmp.noise_fields || []).filter((n) => n.noisy).length;
      cards.push(card('noise fields', cmp.secondary ? String(noisy) : 'no secondary'));
    } else {
      cards.push(card('shadow', 'not shadowed'));
    }
    fill('overview', cards);
  }

  function rateClass(r) {
    if (r === null || r === undefined) return 'nodata';
    if (r >= 0.99) return 'good';
    if (r >= 0.9) return 'warn';
    return 'bad';
  }

  function bar(parts) {
    // parts: [{label, value, cls}] drawn as one stacked bar.
    const total = parts.reduce((s, p) => s + (p.value || 0), 0);
    const b = el('div', {class: 'bar'});
    for (const p of parts) {
      if (!p.value) continue;
      const seg = el('div', {class: 'seg ' + (p.cls || ''), title: p.label + ': ' + num(p.value)});
      seg.style.width = (100 * p.value / total).toFixed(3) + '%';
      b.append(seg);
    }
    if (!total) b.append(el('div', {class: 'seg empty'}));
    return b;
  }

  function table(head, rows, attrs) {
    return el('table', attrs || {},
      el('thead', {}, el('tr', {}, head.map((h) => el('th', {}, h)))),
      el('tbody', {}, rows));
  }

  function renderSplit(route) {
    const s = route.split;
    if (!s) {
      fill('split', el('p', {class: 'muted'}, 'No split: every request goes to ', el('code', {}, route.upstream), '.'));
      return;
    }
    const targets = s.targets && s.targets.length ? s.targets : [route.upstream, s.canary];
    const byUp = s.requests_by_upstream || {};
    const parts = targets.map((t, i) => ({label: t, value: byUp[t] || 0, cls: t === s.canary ? 'canary' : (i === 0 ? 'stable' : 'cohort')}));
    const total = parts.reduce((n, p) => n + p.value, 0);
    const decisions = Object.entries(s.decisions_by_reason || {}).filter(([, v]) => v > 0);
    fill('split',
      el('p', {}, 'Canary ', el('code', {}, s.canary), ' gets ', el('strong', {id: 'split-percent'}, num(s.percent) + '%'),
        ' of keys; stable is ', el('code', {}, route.upstream), '.'),
      bar(parts),
      table(['upstream', 'role', 'requests', 'share'], parts.map((p) => el('tr', {},
        el('td', {}, el('span', {class: 'swatch ' + p.cls}), p.label),
        el('td', {}, p.cls === 'canary' ? 'canary' : (p.cls === 'stable' ? 'stable' : 'cohort')),
        el('td', {class: 'num'}, num(p.value)),
        el('td', {class: 'num'}, total ? pct(p.value / total) : '—')))),
      decisions.length ? el('p', {class: 'muted'}, 'Decisions: ', decisions.map(([k, v]) => k + ' ' + num(v)).join(', ')) : null);
  }

  function currentRollout(route) {
    return state.rollouts.find((r) => r && r.route === route.route) || route.rollout || null;
  }

  // Which commands the rollout controller accepts in each state.
  const ALLOWED = {
    pause: ['progressing'],
    resume: ['paused', 'rolled_back'],
    promote: ['progressing', 'paused'],
    rollback: ['progressing', 'paused', 'completed'],
  };

  function renderRollout(route) {
    const ro = currentRollout(route);
    for (const b of document.querySelectorAll('#rollout-panel .actions button')) {
      const action = b.dataset.action;
      b.disabled = !ro || !ALLOWED[action].includes(ro.state);
      b.textContent = state.armed === action ? 'confirm ' + action + '?' : action;
      b.classList.toggle('armed', state.armed === action);
    }
    if (!ro) {
      fill('rollout', el('p', {class: 'muted'}, 'No rollout configured for this route.'));
      return;
    }
    const rows = [
      ['state', el('span', {class: 'state state-' + ro.state, id: 'rollout-state'}, ro.state)],
      ['mode', ro.mode],
      ['step', (ro.step + 1) + ' of ' + ro.steps],
      ['canary share', num(ro.percent) + '%'],
      ['time in step', span(ro.time_in_step_seconds) + ' of ' + span(ro.hold_seconds) + ' hold' +
        (ro.hold_remaining_seconds > 0 ? ' (' + span(ro.hold_remaining_seconds) + ' left)' : '')],
    ];
    if (ro.last_action) {
      rows.push(['last action', ro.last_action + (ro.last_action_by ? ' by ' + ro.last_action_by : '') +
        (ro.last_action_at ? ' at ' + clock(ro.last_action_at) : '')]);
    }
    if (ro.reason) rows.push(['reason', ro.reason]);
    if (ro.persist_error) rows.push(['state file', el('span', {class: 'error'}, ro.persist_error)]);
    const ev = ro.last_evaluation;
    const out = [el('dl', {class: 'kv'}, rows.map(([k, v]) => [el('dt', {}, k), el('dd', {}, v)]))];
    if (ev) {
      out.push(el('p', {class: 'verdict'}, 'Last verdict (', clock(ev.at), '): ',
        el('strong', {class: 'decision decision-' + ev.decision}, ev.decision), ' — ', ev.reason || ''));
      if (ev.samples) {
        out.push(el('p', {class: 'muted'}, 'Samples in ' + (ev.samples.window || 'window') + ': canary ' + num(ev.samples.canary) +
          ', control ' + num(ev.samples.control) + ', comparisons ' + num(ev.samples.comparisons)));
      }
      const conds = [].concat((ev.promote || []).map((c) => ['promote', c]), (ev.rollback || []).map((c) => ['rollback', c]));
      if (conds.length) {
        out.push(table(['', 'condition', 'canary', 'control', 'verdict'], conds.map(([kind, c]) => el('tr', {title: c.detail || ''},
          el('td', {}, kind),
          el('td', {}, el('code', {}, c.condition), el('div', {class: 'detail'}, c.detail || '')),
          el('td', {class: 'num'}, unitValue(c.canary, c.unit)),
          el('td', {class: 'num'}, unitValue(c.control, c.unit)),
          el('td', {}, el('span', {class: 'verdict-' + c.verdict}, c.verdict + (c.fired ? ' (fired)' : ''))))), {class: 'conditions'}));
      }
    } else {
      out.push(el('p', {class: 'muted'}, 'No evaluation yet.'));
    }
    fill('rollout', out);
  }

  function unitValue(v, unit) {
    if (v === null || v === undefined) return '—';
    if (unit === 'ratio') return pct(v, 2);
    if (unit === 'seconds') return secs(v);
    return num(v);
  }

  async function command(action) {
    const route = state.routes.find((r) => r.route === state.selected);
    if (!route) return;
    if ((action === 'rollback' || action === 'promote') && state.armed !== action) {
      // A second click confirms: these move real traffic.
      state.armed = action;
      renderRollout(route);
      setTimeout(() => {
        if (state.armed === action) {
          state.armed = '';
          renderRollout(route);
        }
      }, 4000);
      return;
    }
    state.armed = '';
    fill('rollout-message', action + '…');
    try {
      const r = await api('/api/v1/rollouts/' + encodeURIComponent(route.route) + '/' + action, 'POST');
      if (r.ok) {
        fill('rollout-message', el('span', {class: 'ok'}, action + ' accepted'));
      } else {
        fill('rollout-message', el('span', {class: 'error'}, action + ' refused: ' + errorText(r)));
      }
    } catch (e) {
      fill('rollout-message', el('span', {class: 'error'}, action + ' failed: ' + e.message));
    }
    refresh();
  }

  for (const b of document.querySelectorAll('#rollout-panel .actions button')) {
    b.addEventListener('click', () => command(b.dataset.action));
  }

  // ---- charts -----------------------------------------------------------------

  function renderCharts(route) {
    const cmp = route.comparison;
    if (!cmp) {
      fill('match-chart', el('p', {class: 'muted'}, 'This route does not shadow.'));
      fill('latency-chart');
      fill('latency-now');
      fill('match-source');
      return;
    }
    const h = state.history && state.history.route === route.route ? state.history : {points: [], local: true};
    fill('match-source', h.local ? 'since this page opened' : 'last hour');
    const targets = (cmp.targets || []).map((t) => t.target);
    const now = Date.now();
    const from = now - HOUR_MS;
    // An interval without comparisons has no latency (the API says 0).
    const byTarget = (t, key) => h.points.filter((p) => p.target === t).map((p) => ({
      t: Date.parse(p.time),
      v: key !== 'match_rate' && p.comparisons === 0 ? null : p[key],
    }));

    const matchSeries = targets.map((t, i) => ({name: t, colour: TARGET_COLOURS[i % TARGET_COLOURS.length], points: byTarget(t, 'match_rate')}));
    lineChart('match-chart', matchSeries, {from, to: now, yMin: 0, yMax: 1, format: (v) => pct(v, 0), empty: 'No comparisons yet.'});

    // Primary latency is the same request for every target; draw it once.
    const lat = [];
    const dash = {p50: null, p95: '6 3', p99: '2 3'};
    for (const q of ['p50', 'p95', 'p99']) {
      lat.push({name: 'primary ' + q, colour: PRIMARY_COLOUR, dash: dash[q], points: targets.length ? byTarget(targets[0], 'primary_' + q) : []});
      targets.forEach((t, i) => lat.push({name: t + ' ' + q, colour: TARGET_COLOURS[i % TARGET_COLOURS.length], dash: dash[q], points: byTarget(t, 'shadow_' + q)}));
    }
    let maxLat = 0;
    for (const s of lat) for (const p of s.points) if (p.v > maxLat) maxLat = p.v;
    lineChart('latency-chart', lat, {from, to: now, yMin: 0, yMax: niceMax(maxLat), format: secs, empty: 'No latency measured yet.'});

    const rows = [];
    (cmp.targets || []).forEach((t) => {
      const l = t.latency || {primary: {}, shadow: {}};
      rows.push(el('tr', {}, el('td', {}, 'primary (vs ' + t.target + ')'), el('td', {class: 'num'}, secs(l.primary.p50)),
        el('td', {class: 'num'}, secs(l.primary.p95)), el('td', {class: 'num'}, secs(l.primary.p99)), el('td', {class: 'num'}, num(l.primary.count))));
      rows.push(el('tr', {}, el('td', {}, 'shadow ' + t.target), el('td', {class: 'num'}, secs(l.shadow.p50)),
        el('td', {class: 'num'}, secs(l.shadow.p95)), el('td', {class: 'num'}, secs(l.shadow.p99)), el('td', {class: 'num'}, num(l.shadow.count))));
    });
    fill('latency-now', table(['since start', 'p50', 'p95', 'p99', 'count'], rows));
  }

  function niceMax(v) {
    if (!(v > 0)) return 0.001;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * p) return m * p;
    return 10 * p;
  }

  // lineChart draws series of {t, v} points (v null = gap) as an SVG.
  function lineChart(id, series, o) {
    const W = 640, H = 220, L = 56, R = 12, T = 10, B = 26;
    const x = (t) => L + (W - L - R) * (t - o.from) / (o.to - o.from);
    const y = (v) => T + (H - T - B) * (1 - (v - o.yMin) / (o.yMax - o.yMin));
    const root = svg('svg', {viewBox: '0 0 ' + W + ' ' + H, role: 'img', 'aria-label': id.replace('-', ' ')});
    for (let i = 0; i <= 4; i++) {
      const v = o.yMin + (o.yMax - o.yMin) * i / 4;
      root.append(svg('line', {x1: L, x2: W - R, y1: y(v), y2: y(v), class: 'grid'}));
      root.append(svg('text', {x: L - 6, y: y(v) + 4, 'text-anchor': 'end', class: 'axis'}, o.format(v)));
    }
    for (let m = 0; m <= 60; m += 10) {
      const t = o.from + m * 60000;
      root.append(svg('line', {x1: x(t), x2: x(t), y1: T, y2: H - B, class: 'grid'}));
      root.append(svg('text', {x: x(t), y: H - 8, 'text-anchor': 'middle', class: 'axis'}, m === 60 ? 'now' : '-' + (60 - m) + 'm'));
    }
    let drawn = 0;
    for (const s of series) {
      let d = '', pen = false;
      const pts = s.points.filter((p) => p.t >= o.from && p.t <= o.to).sort((a, b) => a.t - b.t);
      for (const p of pts) {
        if (p.v === null || p.v === undefined || Number.isNaN(p.v)) {
          pen = false;
          continue;
        }
        const v = Math.min(Math.max(p.v, o.yMin), o.yMax);
        d += (pen ? 'L' : 'M') + x(p.t).toFixed(1) + ' ' + y(v).toFixed(1) + ' ';
        pen = true;
        drawn++;
      }
      if (d) {
        root.append(svg('path', {d, fill: 'none', stroke: s.colour, 'stroke-width': 2, 'stroke-dasharray': s.dash || null, class: 'series'}));
      }
      const last = [...pts].reverse().find((p) => p.v !== null && p.v !== undefined);
      if (last) {
        root.append(svg('circle', {cx: x(last.t), cy: y(Math.min(Math.max(last.v, o.yMin), o.yMax)), r: 3, fill: s.colour},
          svg('title', {}, s.name + ': ' + o.format(last.v) + ' at ' + clock(last.t))));
      }
    }
    if (!drawn) {
      root.append(svg('text', {x: (L + W - R) / 2, y: H / 2, 'text-anchor': 'middle', class: 'empty'}, o.empty));
    }
    const legend = el('div', {class: 'legend'}, series.map((s) => {
      const sw = el('span', {class: 'swatch' + (s.dash ? ' dashed' : '')});
      sw.style.borderColor = s.colour;
      if (!s.dash) sw.style.background = s.colour;
      return el('span', {}, sw, s.name);
    }));
    fill(id, root, legend);
  }

  // ---- shadow outcomes, fields, noise ---------------------------------------------

  function renderOutcomes(route) {
    const s = route.shadow;
    if (!s) {
      fill('outcomes', el('p', {class: 'muted'}, 'This route does not shadow.'));
      return;
    }
    const o = s.outcomes || {};
    const names = ['ok', 'dropped', 'error', 'timeout', 'skipped'];
    const total = names.reduce((n, k) => n + (o[k] || 0), 0);
    const skipped = Object.entries(s.skipped || {}).filter(([, v]) => v > 0);
    fill('outcomes',
      el('p', {}, 'Mirrored to ', (s.targets || []).map((t, i) => [i ? ', ' : '', el('code', {}, t)])),
      bar(names.map((k) => ({label: k, value: o[k] || 0, cls: 'out-' + k}))),
      table(['outcome', 'count', 'share'], names.map((k) => el('tr', {class: 'outcome', 'data-outcome': k},
        el('td', {}, el('span', {class: 'swatch out-' + k}), k),
        el('td', {class: 'num'}, num(o[k] || 0)),
        el('td', {class: 'num'}, total ? pct((o[k] || 0) / total) : '—')))),
      skipped.length ? el('p', {class: 'muted'}, 'Not mirrored: ', skipped.map(([k, v]) => k + ' ' + num(v)).join(', ')) : null);
  }

  function renderFields(route) {
    const cmp = route.comparison;
    if (!cmp) {
      fill('fields', el('p', {class: 'muted'}, 'This route does not shadow.'));
      return;
    }
    const rows = [];
    for (const t of cmp.targets || []) {
      for (const f of t.top_fields || []) {
        const btn = el('button', {type: 'button', class: 'link field-filter', title: 'show samples that differ on this field'}, f.field);
        btn.addEventListener('click', () => setField(f.field));
        rows.push(el('tr', {class: f.field === state.field ? 'selected' : null},
          el('td', {}, btn), el('td', {}, t.target), el('td', {class: 'num'}, num(f.count))));
      }
    }
    const capped = (cmp.targets || []).some((t) => t.fields_capped);
    fill('fields', rows.length ? table(['field', 'target', 'mismatches'], rows, {id: 'top-fields'}) : el('p', {class: 'muted'}, 'No differences yet.'),
      capped ? el('p', {class: 'muted'}, 'More fields differ than max_fields: the rest count as "other".') : null);
  }

  function renderNoise(route) {
    const cmp = route.comparison;
    if (!cmp) {
      fill('noise', el('p', {class: 'muted'}, 'This route does not shadow.'));
      return;
    }
    if (!cmp.secondary) {
      fill('noise', el('p', {class: 'muted'}, 'No secondary upstream: noise is not learnt. Set compare.secondary to a second instance of the primary.'));
      return;
    }
    const fields = [...(cmp.noise_fields || [])].sort((a, b) => (b.noisy - a.noisy) || (b.rate - a.rate));
    fill('noise', fields.length ? table(['path', 'disagreed', 'rate', ''], fields.map((n) => el('tr', {},
      el('td', {}, el('code', {}, n.path)),
      el('td', {class: 'num'}, num(n.disagreements) + ' / ' + num(n.observations)),
      el('td', {class: 'num'}, pct(n.rate)),
      el('td', {}, n.noisy ? el('span', {class: 'tag noisy'}, 'ignored') : el('span', {class: 'tag'}, 'learning'))))) :
      el('p', {class: 'muted'}, 'Primary and secondary agree on everything so far.'));
  }

  // ---- diff samples ------------------------------------------------------------------

  function setField(f) {
    state.field = f;
    $('field').value = f;
    refresh();
  }

  $('diff-filter').addEventListener('submit', (ev) => {
    ev.preventDefault();
    setField($('field').value.trim());
  });
  $('field-clear').addEventListener('click', () => setField(''));
  $('scope').addEventListener('change', () => {
    state.scope = $('scope').value === 'fleet' ? 'fleet' : 'instance';
    refresh();
  });

  function renderDiffs(route) {
    if (!route.comparison) {
      fill('diffs', el('p', {class: 'muted'}, 'This route does not shadow.'));
      return;
    }
    if (state.diffsError) {
      fill('diffs', el('p', {class: 'error'}, state.diffsError));
      return;
    }
    const samples = state.diffs || [];
    if (!samples.length) {
      fill('diffs', el('p', {class: 'muted'}, state.field ? 'No stored sample differs on ' + state.field + '.' : 'No mismatches stored yet.'));
      return;
    }
    fill('diffs', samples.map((s) => el('article', {class: 'sample'},
      el('header', {},
        el('span', {class: 'time'}, clock(s.time)),
        el('span', {class: 'target'}, 'vs ' + s.target),
        el('code', {class: 'request'}, s.method + ' ' + s.uri),
        el('span', {class: 'status'}, 'primary ', el('b', {class: statusClass(s.primary_status)}, String(s.primary_status)),
          ' · shadow ', el('b', {class: statusClass(s.shadow_status)}, String(s.shadow_status))),
        s.request_id ? el('span', {class: 'muted'}, 'id ' + s.request_id) : null),
      s.note ? el('p', {class: 'note'}, s.note) : null,
      table(['field', 'kind', 'primary', 'shadow'], (s.differences || []).map((d) => el('tr', {class: isFiltered(d.path) ? 'selected' : null},
        el('td', {class: 'diff-path'}, d.path),
        el('td', {class: 'kind'}, d.kind),
        el('td', {class: 'val primary'}, d.primary === '' ? el('i', {}, 'absent') : d.primary),
        el('td', {class: 'val shadow'}, d.shadow === '' ? el('i', {}, 'absent') : d.shadow))), {class: 'difftable'}),
      s.omitted ? el('p', {class: 'muted'}, '+' + s.omitted + ' more differences not stored') : null)));
  }

  function isFiltered(path) {
    if (!state.field) return false;
    return path === state.field || path.replace(/\/\d+(?=\/|$)/g, '/*') === state.field;
  }

  function statusClass(code) {
    if (code >= 500 || code === 0) return 'bad';
    if (code >= 400) return 'warn';
    return 'good';
  }

  // ---- start ---------------------------------------------------------------------------

  window.addEventListener('hashchange', () => {
    state.selected = decodeHash();
    state.field = '';
    $('field').value = '';
    state.armed = '';
    fill('rollout-message');
    refresh();
  });
  document.addEventListener('visibilitychange', () => {
    if (!document.hidden) refresh();
  });
  refresh();
})();
