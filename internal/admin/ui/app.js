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
  // Samples fetched per poll: enough for identical differences to group.
  const DIFF_LIMIT = 100;
  const MIN_FIT_MS = 30000; // "fit to data" never shows less than this
  // Sent on every mutating request: a header a cross-site form cannot set,
  // which the admin listener's CSRF guard looks for.
  const ADMIN_HEADER = 'X-Shadowproxy-Admin';
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
    cutover: null, // the selected route's cutover readiness, or null
    range: sessionStorage.getItem('shadowproxy.range') || 'fit', // 'fit' or seconds
    quantile: sessionStorage.getItem('shadowproxy.quantile') || 'p95',
    ignoreFor: '', // field whose "ignore this field" snippet is open
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
      if (method && method !== 'GET') headers[ADMIN_HEADER] = '1';
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
      state.cutover = null;
      if (route && route.shadow) {
        const co = await api('/api/v1/routes/' + encodeURIComponent(route.route) + '/cutover');
        state.cutover = co.ok ? co.body : null;
      }
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
    // A route that does not shadow has no charts, fields or samples: say
    // so once instead of in every panel.
    const shadows = !!(route.shadow || route.comparison);
    $('shadow-sections').hidden = !shadows;
    $('no-shadow').hidden = shadows;
    if (!shadows) {
      fill('no-shadow', el('p', {class: 'muted'}, 'This route does not shadow: no comparison, match rate or diff samples. ',
        'Add a shadow: section to mirror its requests to a candidate (the README\'s "Shadow mirroring" section).'));
    }
    renderSplit(route);
    renderRollout(route);
    renderCutover(route);
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
    const cards = [card('route', route.route), card('stable upstream', route.upstream), card('requests since start', num(route.requests))];
    const cmp = route.comparison;
    if (cmp) {
      for (const t of cmp.targets || []) {
        const has1m = t.match_rate_1m !== null && t.match_rate_1m !== undefined;
        const rate = has1m ? t.match_rate_1m : t.match_rate_total;
        const window = has1m ? 'last 1m' : 'since start';
        cards.push(card('match rate vs ' + t.target + ' · ' + window, pct(rate),
          {class: 'card match-rate ' + rateClass(rate), 'data-target': t.target, 'data-window': window,
            title: 'Of the requests compared ' + (has1m ? 'in the last minute' : 'since start') +
              ', the share where ' + t.target + ' answered the same as the primary. ' + RATE_LEGEND}));
        const c = t.counts || {};
        const parts = [num(c.match) + ' ✓', num(c.mismatch) + ' ✗', num(c.uncomparable) + ' ?'];
        if (c.learning !== undefined) parts.push(num(c.learning) + ' ≈');
        cards.push(card('comparisons vs ' + t.target + ' · since start', parts.join('  '),
          {class: 'card comparisons', title: COUNT_LEGEND + (c.learning !== undefined ? LEARNING_LEGEND : '.')}));
      }
      const noisy = (cmp.noise_fields || []).filter((n) => n.noisy).length;
      cards.push(card('learnt noise fields', cmp.secondary ? String(noisy) : 'no secondary'));
      const learning = (cmp.targets || []).some((t) => t.counts && t.counts.learning !== undefined);
      fill('overview-help', 'Match rate: the share of compared requests where the shadow answered the same as the primary, ' +
        'after learnt noise and ignored fields are left out. ' + RATE_LEGEND + ' ' + COUNT_LEGEND + (learning ? LEARNING_LEGEND : '.'));
    } else {
      cards.push(card('shadow', 'not shadowed'));
      fill('overview-help');
    }
    fill('overview', cards);
  }

  const RATE_LEGEND = 'Green from 99%, amber from 90%, red below 90%.';
  const COUNT_LEGEND = '✓ same answer · ✗ different answer (see the samples below) · ? could not be compared ' +
    '(a body too large to capture, or not comparable)';
  const LEARNING_LEGEND = ' · ≈ compared while noise was still being learnt, not counted.';

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
    const ro = currentRollout(route);
    fill('split',
      el('p', {}, 'Now: canary ', el('code', {}, s.canary), ' gets ', el('strong', {id: 'split-percent'}, num(s.percent) + '%'),
        ' of keys', ro ? ' (set by the rollout)' : '', '; stable is ', el('code', {}, route.upstream), '.'),
      el('p', {class: 'muted'}, 'Since start (every share the split has had, cohorts included):'),
      bar(parts),
      table(['upstream', 'role', 'requests since start', 'share since start'], parts.map((p) => el('tr', {},
        el('td', {}, el('span', {class: 'swatch ' + p.cls}), p.label),
        el('td', {}, p.cls === 'canary' ? 'canary' : (p.cls === 'stable' ? 'stable' : 'cohort')),
        el('td', {class: 'num'}, num(p.value)),
        el('td', {class: 'num'}, total ? pct(p.value / total) : '—')))),
      decisions.length ? el('p', {class: 'muted'}, 'Decisions since start: ', decisions.map(([k, v]) => k + ' ' + num(v)).join(', ')) : null);
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

  // stepText names a step the way the configuration and the API do:
  // steps[i], 0-based, with the range of indexes.
  function stepText(ro) {
    return 'steps[' + ro.step + '] of steps[0]–steps[' + Math.max(0, ro.steps - 1) + ']';
  }

  // timeRow says how long the rollout has been where it is, in the words of
  // its state: a hold only counts down while progressing.
  function timeRow(ro) {
    const since = ro.last_action_at ? (Date.now() - Date.parse(ro.last_action_at)) / 1000 : ro.time_in_step_seconds;
    switch (ro.state) {
      case 'progressing':
        if (!(ro.hold_seconds > 0)) return ['time in step', span(ro.time_in_step_seconds)];
        return ['time in step', span(Math.min(ro.time_in_step_seconds, ro.hold_seconds)) + ' of ' + span(ro.hold_seconds) + ' hold' +
          (ro.hold_remaining_seconds > 0 ? ' (' + span(ro.hold_remaining_seconds) + ' left)' : ' (waiting for the promote conditions)')];
      case 'paused':
        return ['paused for', span(since) + ' (the hold does not count while paused)'];
      case 'rolled_back':
        return ['rolled back', span(since) + ' ago'];
      case 'completed':
        return ['completed', span(since) + ' ago'];
    }
    return ['time in step', span(ro.time_in_step_seconds)];
  }

  function renderRollout(route) {
    const ro = currentRollout(route);
    // No rollout, no buttons: there is nothing they could act on.
    $('rollout-actions').hidden = !ro;
    for (const b of document.querySelectorAll('#rollout-panel .actions button')) {
      const action = b.dataset.action;
      b.disabled = !ro || !ALLOWED[action].includes(ro.state);
      b.textContent = state.armed === action ? 'confirm ' + action + '?' : action;
      b.classList.toggle('armed', state.armed === action);
    }
    if (!ro) {
      fill('rollout', el('p', {class: 'muted'}, 'No rollout on this route.', route.split ? ' The split share changes only when the configuration does.' : ''));
      return;
    }
    const share = num(ro.percent) + '%' + (ro.state === 'rolled_back' ? ' (rolled back)' : ro.state === 'completed' ? ' (completed)' : '');
    const rows = [
      ['state', el('span', {class: 'state state-' + ro.state, id: 'rollout-state'}, ro.state)],
      ['mode', ro.mode],
      ['step', el('span', {id: 'rollout-step', title: 'steps are numbered from 0, as in the configuration and the API'}, stepText(ro))],
      ['canary share now', share],
      timeRow(ro),
    ];
    if (ro.last_action) {
      rows.push(['last action', ro.last_action + (ro.last_action_by ? ' by ' + ro.last_action_by : '') +
        (ro.last_action_at ? ' at ' + clock(ro.last_action_at) : '')]);
    }
    if (ro.reason) rows.push(['reason', ro.reason]);
    if (ro.gate_pending) rows.push(['gate', el('span', {class: 'error', id: 'rollout-gate'}, 'waiting for the step\'s gates (no traffic yet)' + (ro.gate ? ': ' + ro.gate : ''))]);
    else if (ro.gate) rows.push(['gate', ro.gate]);
    if (ro.stale) {
      rows.push(['stale split', el('span', {class: 'error', id: 'rollout-stale'}, 'completed ' + (ro.completed_at ? clock(ro.completed_at) : '') +
        ' and older than stale_after: make the canary the route\'s upstream and remove the split (shadowproxy validate names the change)')]);
    }
    rows.push(['evidence', el('a', {href: '/api/v1/rollouts/' + encodeURIComponent(ro.route) + '/evidence', id: 'rollout-evidence'}, 'rollback records')]);
    if (ro.persist_error) rows.push(['state file', el('span', {class: 'error'}, ro.persist_error)]);
    const ev = ro.last_evaluation;
    const out = [el('dl', {class: 'kv'}, rows.map(([k, v]) => [el('dt', {}, k), el('dd', {}, v)]))];
    if (ev) {
      out.push(el('p', {class: 'verdict'}, 'Last verdict (', clock(ev.at), '): ',
        el('strong', {class: 'decision decision-' + ev.decision}, ev.decision), ' — ', ev.reason || ''));
      if (ev.samples) {
        out.push(el('p', {class: 'muted'}, 'Windowed: samples in the last ' + (ev.samples.window || 'window') + ': canary ' + num(ev.samples.canary) +
          ', control ' + num(ev.samples.control) + ', comparisons ' + num(ev.samples.comparisons)));
      }
      const conds = [].concat((ev.promote || []).map((c) => ['promote', c]), (ev.rollback || []).map((c) => ['rollback', c]));
      if (conds.length) {
        const w = ev.samples && ev.samples.window ? ' (last ' + ev.samples.window + ')' : ' (window)';
        out.push(table(['', 'condition', 'canary' + w, 'control' + w, 'verdict'], conds.map(([kind, c]) => el('tr', {title: c.detail || ''},
          el('td', {}, kind),
          el('td', {}, el('code', {}, c.condition), el('div', {class: 'detail'}, c.detail || '')),
          el('td', {class: 'num'}, unitValue(c.canary, c.unit)),
          el('td', {class: 'num'}, unitValue(c.control, c.unit)),
          el('td', {}, el('span', {class: 'verdict-' + c.verdict}, c.verdict + (c.fired ? ' (fired)' : ''))))), {class: 'conditions'}));
      }
    } else {
      out.push(el('p', {class: 'muted'}, 'No evaluation yet.'));
    }
    const sm = ro.last_smoke;
    if (sm) {
      out.push(el('p', {class: 'verdict'}, 'Smoke checks (' + sm.phase + ', ' + clock(sm.at) + '): ',
        el('strong', {class: 'verdict-' + (sm.verdict === 'pass' ? 'pass' : 'breach')}, sm.verdict), ' — ', sm.summary || ''));
      const smokeRow = (r) => {
        const failed = (r.assertions || []).filter((a) => !a.passed).map((a) => a.what + ' want ' + a.want + ' got ' + a.got).join('; ');
        const result = r.passed ? 'pass' : 'fail: ' + (r.error || failed);
        return el('tr', {title: r.excerpt || r.error || ''},
          el('td', {}, r.check), el('td', {}, r.target + ' (' + (r.upstream || '') + ')'),
          el('td', {class: 'num'}, String(r.status || '—')), el('td', {class: 'num'}, num(r.latency_ms) + ' ms'),
          el('td', {}, result));
      };
      out.push(table(['check', 'target', 'status', 'latency', 'result'], (sm.results || []).map(smokeRow), {class: 'smoke'}));
    }
    fill('rollout', out);
  }

  // renderCutover shows a dark launch's readiness to cut over, or how long
  // the old path has been stable as a shadow since.
  function renderCutover(route) {
    const co = state.cutover;
    $('cutover-panel').hidden = !co;
    if (!co) return;
    const rows = [
      ['serving', el('code', {id: 'cutover-serving'}, co.serving)],
      ['shadow', el('code', {}, co.shadow)],
      ['criterion', 'match rate ≥ ' + pct(co.at_least, 2) + ' for ' + secs(co.for_seconds) + ', ≥ ' + num(co.min_comparisons) + ' comparisons' + (co.auto ? ' (auto)' : '')],
      ['match rate', co.match_rate === null || co.match_rate === undefined ? '—' : pct(co.match_rate, 2)],
      ['streak', secs(co.streak_seconds) + ' over ' + num(co.streak_comparisons) + ' comparisons'],
      ['status', el('span', {id: 'cutover-status', class: co.ready || co.retire_ready ? 'ok' : ''}, co.reason)],
    ];
    if (co.cut_over && co.cut_over_at) rows.push(['cut over', clock(co.cut_over_at) + (co.cut_over_by ? ' by ' + co.cut_over_by : '')]);
    if (co.evidence) rows.push(['evidence', el('a', {href: '/api/v1/rollouts/' + encodeURIComponent(route.route) + '/evidence/' + encodeURIComponent(co.evidence)}, co.evidence)]);
    if (co.persist_error) rows.push(['state', el('span', {class: 'error'}, co.persist_error)]);
    fill('cutover', el('dl', {class: 'kv'}, rows.map(([k, v]) => [el('dt', {}, k), el('dd', {}, v)])));
    $('btn-cutover').disabled = co.cut_over || !co.ready;
    $('btn-revert').disabled = !co.cut_over;
    $('btn-cutover').textContent = state.armed === 'cutover' ? 'confirm cut over?' : 'cut over';
  }

  async function cutoverCommand(action) {
    const route = state.routes.find((r) => r.route === state.selected);
    if (!route) return;
    if (action === 'cutover' && state.armed !== 'cutover') {
      state.armed = 'cutover'; // a second click confirms: this changes who serves users
      renderCutover(route);
      setTimeout(() => {
        if (state.armed === 'cutover') {
          state.armed = '';
          renderCutover(route);
        }
      }, 4000);
      return;
    }
    state.armed = '';
    fill('cutover-message', action + '…');
    try {
      const r = await api('/api/v1/routes/' + encodeURIComponent(route.route) + '/' + action, 'POST');
      fill('cutover-message', r.ok ? el('span', {class: 'ok'}, action + ' done') : el('span', {class: 'error'}, action + ' refused: ' + errorText(r)));
    } catch (e) {
      fill('cutover-message', el('span', {class: 'error'}, action + ' failed: ' + e.message));
    }
    refresh();
  }

  for (const b of document.querySelectorAll('#cutover-panel .actions button')) {
    b.addEventListener('click', () => cutoverCommand(b.dataset.action));
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

  function setChoice(id, attr, value) {
    for (const b of document.querySelectorAll('#' + id + ' button')) {
      const on = b.dataset[attr] === String(value);
      b.classList.toggle('current', on);
      b.setAttribute('aria-pressed', String(on));
    }
  }

  for (const b of document.querySelectorAll('#range button')) {
    b.addEventListener('click', () => {
      state.range = b.dataset.range;
      sessionStorage.setItem('shadowproxy.range', state.range);
      render();
    });
  }
  for (const b of document.querySelectorAll('#quantile button')) {
    b.addEventListener('click', () => {
      state.quantile = b.dataset.q;
      sessionStorage.setItem('shadowproxy.quantile', state.quantile);
      render();
    });
  }

  // timeRange is the charts' x axis: a fixed window, or (fit) from the
  // first point with data to now, so that the first minutes of a new proxy
  // fill the chart instead of being a sliver at its right edge.
  function timeRange(points) {
    const now = Date.now();
    if (state.range !== 'fit') return {from: now - Number(state.range) * 1000, to: now, fit: false};
    let first = Infinity;
    for (const p of points) {
      const t = Date.parse(p.time);
      if (t < first) first = t;
    }
    if (!Number.isFinite(first)) return {from: now - MIN_FIT_MS, to: now, fit: true};
    const span = Math.min(HOUR_MS, Math.max(MIN_FIT_MS, (now - first) * 1.05));
    return {from: now - span, to: now, fit: true};
  }

  function renderCharts(route) {
    setChoice('range', 'range', state.range);
    setChoice('quantile', 'q', state.quantile);
    const cmp = route.comparison;
    $('chart-toolbar').hidden = !cmp;
    if (!cmp) {
      fill('match-chart', el('p', {class: 'muted'}, 'This route does not shadow.'));
      fill('latency-chart');
      fill('latency-now');
      fill('match-source');
      return;
    }
    const h = state.history && state.history.route === route.route ? state.history : {points: [], local: true};
    fill('match-source', h.local ? 'since this page opened' : '10-second points');
    const targets = (cmp.targets || []).map((t) => t.target);
    const range = timeRange(h.points);
    fill('range-note', range.fit ? 'the last ' + span((range.to - range.from) / 1000) + ' (all the proxy has)' : '');
    // An interval without comparisons has no latency (the API says 0).
    const byTarget = (t, key) => h.points.filter((p) => p.target === t).map((p) => ({
      t: Date.parse(p.time),
      v: key !== 'match_rate' && p.comparisons === 0 ? null : p[key],
    }));

    const matchSeries = targets.map((t, i) => ({name: t, colour: TARGET_COLOURS[i % TARGET_COLOURS.length], points: byTarget(t, 'match_rate')}));
    lineChart('match-chart', matchSeries, {from: range.from, to: range.to, yMin: 0, yMax: 1, format: (v) => pct(v, 1), empty: 'No comparisons yet.'});

    // One quantile at a time: the primary (the same requests for every
    // target, so drawn once) against each shadow.
    const q = ['p50', 'p95', 'p99'].includes(state.quantile) ? state.quantile : 'p95';
    const lat = [{name: 'primary ' + q, colour: PRIMARY_COLOUR, points: targets.length ? byTarget(targets[0], 'primary_' + q) : []}];
    targets.forEach((t, i) => lat.push({name: 'shadow ' + t + ' ' + q, colour: TARGET_COLOURS[i % TARGET_COLOURS.length], points: byTarget(t, 'shadow_' + q)}));
    let maxLat = 0;
    for (const s of lat) for (const p of s.points) if (p.t >= range.from && p.v > maxLat) maxLat = p.v;
    lineChart('latency-chart', lat, {from: range.from, to: range.to, yMin: 0, yMax: niceMax(maxLat), format: secs, empty: 'No latency measured yet.'});

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

  // Tick spacings for the time axis, in seconds: the first that gives at
  // most 6 intervals is used.
  const TICKS = [10, 15, 30, 60, 120, 300, 600, 900, 1800];

  function ago(ms) {
    const s = Math.round(ms / 1000);
    if (s === 0) return 'now';
    if (s < 60) return '-' + s + 's';
    return '-' + Math.floor(s / 60) + 'm' + (s % 60 ? (s % 60) + 's' : '');
  }

  // lineChart draws series of {t, v} points (v null = gap) as an SVG, with a
  // legend that carries each series' latest value and a hover read-out.
  function lineChart(id, series, o) {
    const W = 640, H = 220, L = 56, R = 12, T = 10, B = 26;
    const x = (t) => L + (W - L - R) * (t - o.from) / (o.to - o.from);
    const y = (v) => T + (H - T - B) * (1 - (v - o.yMin) / (o.yMax - o.yMin));
    const spanS = (o.to - o.from) / 1000;
    const root = svg('svg', {viewBox: '0 0 ' + W + ' ' + H, role: 'img', 'aria-label': id.replace('-', ' '),
      'data-from': Math.round(o.from), 'data-to': Math.round(o.to), 'data-span': Math.round(spanS)});
    for (let i = 0; i <= 4; i++) {
      const v = o.yMin + (o.yMax - o.yMin) * i / 4;
      root.append(svg('line', {x1: L, x2: W - R, y1: y(v), y2: y(v), class: 'grid'}));
      root.append(svg('text', {x: L - 6, y: y(v) + 4, 'text-anchor': 'end', class: 'axis'}, o.format(v)));
    }
    const step = (TICKS.find((s) => spanS / s <= 6) || 3600) * 1000;
    for (let t = o.to; t >= o.from - 1; t -= step) {
      root.append(svg('line', {x1: x(t), x2: x(t), y1: T, y2: H - B, class: 'grid'}));
      root.append(svg('text', {x: x(t), y: H - 8, 'text-anchor': t === o.to ? 'end' : 'middle', class: 'axis'}, ago(o.to - t)));
    }
    let drawn = 0;
    const visible = [];
    for (const s of series) {
      let d = '', pen = false;
      const pts = s.points.filter((p) => p.t >= o.from && p.t <= o.to).sort((a, b) => a.t - b.t);
      visible.push({s, pts});
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
        root.append(svg('path', {d, fill: 'none', stroke: s.colour, 'stroke-width': 2, 'stroke-dasharray': s.dash || null, class: 'series', 'data-series': s.name}));
      }
      const last = [...pts].reverse().find((p) => p.v !== null && p.v !== undefined);
      if (last) {
        root.append(svg('circle', {cx: x(last.t), cy: y(Math.min(Math.max(last.v, o.yMin), o.yMax)), r: 3, fill: s.colour},
          svg('title', {}, s.name + ': ' + o.format(last.v) + ' at ' + clock(last.t))));
      }
      s.last = last;
    }
    if (!drawn) {
      root.append(svg('text', {x: (L + W - R) / 2, y: H / 2, 'text-anchor': 'middle', class: 'empty'}, o.empty));
    }
    // Hover: a vertical line at the nearest point in time, and each
    // series' value there.
    const cursor = svg('line', {x1: 0, x2: 0, y1: T, y2: H - B, class: 'cursor', visibility: 'hidden'});
    root.append(cursor);
    const tip = el('div', {class: 'tip', hidden: true});
    root.addEventListener('mousemove', (ev) => {
      const box = root.getBoundingClientRect();
      const t = o.from + ((ev.clientX - box.left) * W / box.width - L) / (W - L - R) * (o.to - o.from);
      let best = null;
      for (const {pts} of visible) {
        for (const p of pts) if (p.v !== null && p.v !== undefined && (!best || Math.abs(p.t - t) < Math.abs(best - t))) best = p.t;
      }
      if (best === null) return;
      cursor.setAttribute('x1', x(best));
      cursor.setAttribute('x2', x(best));
      cursor.setAttribute('visibility', 'visible');
      const lines = visible.map(({s, pts}) => {
        const p = pts.find((q) => q.t === best);
        return el('div', {}, el('span', {class: 'dot', 'data-colour': s.colour}), s.name + ': ' + (p && p.v !== null && p.v !== undefined ? o.format(p.v) : '—'));
      });
      tip.replaceChildren(el('div', {class: 'tip-time'}, clock(best) + ' (' + ago(o.to - best) + ')'), ...lines);
      for (const d of tip.querySelectorAll('.dot')) d.style.background = d.dataset.colour;
      tip.hidden = false;
      tip.style.left = Math.min(box.width - 180, Math.max(0, ev.clientX - box.left + 12)) + 'px';
    });
    root.addEventListener('mouseleave', () => {
      tip.hidden = true;
      cursor.setAttribute('visibility', 'hidden');
    });
    const legend = el('div', {class: 'legend'}, series.map((s) => {
      const sw = el('span', {class: 'swatch' + (s.dash ? ' dashed' : '')});
      sw.style.borderColor = s.colour;
      if (!s.dash) sw.style.background = s.colour;
      return el('span', {class: 'legend-item'}, sw, s.name, s.last ? el('b', {}, ' ' + o.format(s.last.v)) : null);
    }));
    fill(id, el('div', {class: 'plot'}, root, tip), legend);
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
      skipped.length ? el('p', {class: 'muted'}, 'Not mirrored: ', skipped.map(([k, v]) => k + ' ' + num(v)).join(', ')) : null,
      (s.skipped || {}).secondary_canary_served > 0 ? el('p', {class: 'muted', id: 'secondary-skipped'},
        'The secondary is only asked about requests the stable upstream served; ' + num(s.skipped.secondary_canary_served) +
        ' canary-served requests were skipped for it (their noise is judged from learnt rates).') : null);
  }

  // normPath turns array indexes into *, as top fields and ignore rules
  // write them.
  function normPath(p) {
    return String(p).replace(/\/\d+(?=\/|$)/g, '/*');
  }

  function noisyPaths(cmp) {
    const out = new Set();
    for (const n of (cmp && cmp.noise_fields) || []) if (n.noisy) out.add(normPath(n.path));
    return out;
  }

  function renderFields(route) {
    const cmp = route.comparison;
    if (!cmp) {
      fill('fields', el('p', {class: 'muted'}, 'This route does not shadow.'));
      return;
    }
    // A field learnt as noise is shown once, under Learnt noise: it no
    // longer makes a comparison differ.
    const noisy = noisyPaths(cmp);
    const rows = [];
    let hidden = 0;
    for (const t of cmp.targets || []) {
      for (const f of t.top_fields || []) {
        if (noisy.has(normPath(f.field))) {
          hidden++;
          continue;
        }
        const btn = el('button', {type: 'button', class: 'link field-filter', title: 'show samples that differ on this field'}, f.field);
        btn.addEventListener('click', () => setField(f.field));
        const ign = el('button', {type: 'button', class: 'small ignore-field', title: 'show the configuration line that ignores this field'}, 'ignore…');
        ign.addEventListener('click', () => showIgnore(f.field));
        rows.push(el('tr', {class: f.field === state.field ? 'selected' : null},
          el('td', {}, btn), el('td', {}, t.target), el('td', {class: 'num'}, num(f.count)), el('td', {class: 'num'}, num(f.raw || 0)), el('td', {}, ign)));
      }
    }
    const capped = (cmp.targets || []).some((t) => t.fields_capped);
    fill('fields', rows.length ? table(['field', 'target', 'mismatches', 'before noise', ''], rows, {id: 'top-fields'}) : el('p', {class: 'muted'}, 'No differences yet.'),
      hidden ? el('p', {class: 'muted'}, hidden + ' field(s) learnt as noise are listed under Learnt noise instead.') : null,
      capped ? el('p', {class: 'muted'}, 'More fields differ than max_fields: the rest count as "other".') : null);
  }

  function renderNoise(route) {
    const cmp = route.comparison;
    $('noise-actions').hidden = !(cmp && cmp.secondary);
    if (!cmp) {
      fill('noise', el('p', {class: 'muted'}, 'This route does not shadow.'));
      return;
    }
    if (!cmp.secondary) {
      fill('noise', el('p', {class: 'muted'}, 'No secondary upstream: noise is not learnt. Set compare.secondary to a second instance of the primary.'));
      return;
    }
    $('noise-reset').textContent = state.armed === 'noise-reset' ? 'confirm reset?' : 'reset learnt noise';
    $('noise-reset').classList.toggle('armed', state.armed === 'noise-reset');
    // Bounded on the page too: the noisiest keys first.
    const fields = [...(cmp.noise_fields || [])].sort((a, b) => (b.noisy - a.noisy) || (b.rate - a.rate)).slice(0, 30);
    const endpoints = cmp.endpoints || [];
    fill('noise', fields.length ? table(['endpoint', 'path', 'kind', 'disagreed', 'rate', ''], fields.map((n) => el('tr', {},
      el('td', {}, el('code', {}, n.endpoint || '')),
      el('td', {}, el('code', {}, n.path)),
      el('td', {}, n.kind || ''),
      el('td', {class: 'num'}, num(n.disagreements) + ' / ' + num(n.observations)),
      el('td', {class: 'num'}, pct(n.rate)),
      el('td', {}, n.noisy ? el('span', {class: 'tag noisy'}, 'noise') : el('span', {class: 'tag'}, 'learning'))))) :
      el('p', {class: 'muted'}, 'Primary and secondary agree on everything so far.'),
      endpoints.length ? table(['endpoint', 'state', 'target', 'match rate', 'mismatches', 'learning'], endpoints.flatMap((e) =>
        (e.targets || []).map((t) => el('tr', {class: 'endpoint'},
          el('td', {}, el('code', {}, e.endpoint)),
          el('td', {}, e.learning ? el('span', {class: 'tag'}, 'learning') : 'judging'),
          el('td', {}, t.target),
          el('td', {class: 'num'}, t.match_rate_total == null ? '—' : pct(t.match_rate_total)),
          el('td', {class: 'num'}, num((t.counts || {}).mismatch || 0)),
          el('td', {class: 'num'}, num((t.counts || {}).learning || 0))))), {id: 'endpoints'}) : null,
      cmp.endpoints_other ? el('p', {class: 'muted'}, num(cmp.endpoints_other) + ' comparisons of endpoints beyond max_endpoints count as "other".') : null);
  }

  // resetNoise asks the proxy to forget what it learnt for the route (the
  // token is asked for when needed). A proxy without the endpoint says so.
  async function resetNoise() {
    const route = state.routes.find((r) => r.route === state.selected);
    if (!route) return;
    const show = () => {
      renderNoise(route);
      renderFieldActions(route);
    };
    if (state.armed !== 'noise-reset') {
      state.armed = 'noise-reset';
      show();
      setTimeout(() => {
        if (state.armed === 'noise-reset') {
          state.armed = '';
          show();
        }
      }, 4000);
      return;
    }
    state.armed = '';
    show();
    fill('noise-message', 'resetting…');
    try {
      const path = '/api/v1/routes/' + encodeURIComponent(route.route) + '/noise/reset';
      const r = await api(path, 'POST');
      if (r.ok) {
        fill('noise-message', el('span', {class: 'ok', id: 'noise-result'}, 'Learnt noise reset: it is learnt again from the secondary.'));
      } else if (r.status === 404 || r.status === 405) {
        fill('noise-message', el('span', {class: 'muted', id: 'noise-result'}, 'This proxy cannot reset learnt noise (POST ' + path +
          ' answered ' + r.status + '): upgrade it, or restart it to forget what it learnt.'));
      } else {
        fill('noise-message', el('span', {class: 'error', id: 'noise-result'}, 'reset refused: ' + errorText(r)));
      }
    } catch (e) {
      fill('noise-message', el('span', {class: 'error', id: 'noise-result'}, 'reset failed: ' + e.message));
    }
    refresh();
  }
  $('noise-reset').addEventListener('click', resetNoise);

  // ---- ignoring a field ------------------------------------------------------------

  // ignoreAdvice says how to stop a field from counting: the exact line to
  // add to the route's shadow.compare.ignore (JSON paths), or what to change
  // for headers; status and whole-body differences cannot be ignored.
  function ignoreAdvice(route, field) {
    const idx = state.routes.findIndex((r) => r.route === route.route);
    const where = 'routes[' + idx + '].shadow.compare';
    const f = normPath(field);
    if (f.startsWith('/')) {
      return {where: where + '.ignore', line: '- ' + JSON.stringify(f),
        context: ['routes:', '  - name: ' + JSON.stringify(route.route) + '   # routes[' + idx + ']', '    shadow:', '      compare:', '        ignore:', '          - ' + JSON.stringify(f)].join('\n')};
    }
    if (f.startsWith('header/')) {
      const h = f.slice('header/'.length);
      return {where: where + '.headers', text: 'Remove ' + h + ' from ' + where + '.headers (with "*", list the headers to compare instead): headers are compared only when listed.'};
    }
    return {where, text: 'A difference of ' + f + ' cannot be ignored: it is the status code or the whole body. Fix the shadow, or compare it on another route.'};
  }

  function showIgnore(field) {
    state.ignoreFor = field;
    if (state.field !== field) {
      setField(field);
    } else {
      renderFieldActions(state.routes.find((r) => r.route === state.selected));
    }
  }

  function renderFieldActions(route) {
    const box = $('field-actions');
    if (!route || !route.comparison || !state.field) {
      box.hidden = true;
      box.replaceChildren();
      return;
    }
    const f = state.field;
    const ign = el('button', {type: 'button', id: 'ignore-field'}, 'ignore this field');
    ign.addEventListener('click', () => showIgnore(f));
    const head = el('div', {class: 'field-head'}, 'Field ', el('code', {}, f), ' ', ign);
    if (route.comparison.secondary) {
      // A field wrongly learnt as noise (or wrongly not) is learnt afresh.
      const reset = el('button', {type: 'button', id: 'field-reset-noise', class: 'danger' + (state.armed === 'noise-reset' ? ' armed' : ''),
        title: 'forget the noise learnt on this route; it is learnt again from the secondary'},
      state.armed === 'noise-reset' ? 'confirm reset?' : 'reset learnt noise');
      reset.addEventListener('click', resetNoise);
      head.append(' ', reset);
    }
    const out = [head];
    if (state.ignoreFor === f) {
      const a = ignoreAdvice(route, f);
      if (a.line) {
        const copy = el('button', {type: 'button', id: 'copy-yaml'}, 'copy');
        const line = el('code', {id: 'ignore-line', class: 'yaml-line'}, a.line);
        copy.addEventListener('click', () => copyText(a.line, copy, line));
        out.push(el('p', {}, 'Add this line to ', el('code', {}, a.where), ', then reload (SIGHUP or POST /api/v1/reload):'),
          el('div', {class: 'yaml-row'}, line, copy),
          el('details', {}, el('summary', {}, 'where it goes'), el('pre', {class: 'yaml', id: 'ignore-context'}, a.context)));
      } else {
        out.push(el('p', {id: 'ignore-advice'}, a.text));
      }
    }
    box.replaceChildren(...out);
    box.hidden = false;
  }

  async function copyText(text, button, node) {
    try {
      await navigator.clipboard.writeText(text);
      button.textContent = 'copied';
    } catch (e) {
      // No clipboard (an insecure context): select the text for Ctrl-C.
      const r = document.createRange();
      r.selectNodeContents(node);
      const sel = window.getSelection();
      sel.removeAllRanges();
      sel.addRange(r);
      button.textContent = 'selected: press Ctrl-C';
    }
    setTimeout(() => { button.textContent = 'copy'; }, 2000);
  }

  // ---- diff samples ------------------------------------------------------------------

  function setField(f) {
    state.field = f;
    if (state.ignoreFor !== f) state.ignoreFor = '';
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

  // groupSamples puts samples that differ in the same way together: the
  // same target, statuses, and fields (indexes as *) with the same kind of
  // difference. Samples come newest first, so each group's first is its
  // newest example.
  function groupSamples(samples) {
    const groups = new Map();
    for (const s of samples) {
      const sig = (s.differences || []).map((d) => normPath(d.path) + ' ' + d.kind).sort().join('\n');
      const key = [s.target, s.primary_status, s.shadow_status, s.note ? 'note' : '', sig].join('\u0000');
      let g = groups.get(key);
      if (!g) {
        g = {newest: s, count: 0, oldest: s, values: new Set()};
        groups.set(key, g);
      }
      g.count++;
      g.oldest = s;
      g.values.add((s.differences || []).map((d) => d.primary + '\u0000' + d.shadow).join('\u0001'));
    }
    return [...groups.values()];
  }

  function renderDiffs(route) {
    renderFieldActions(route);
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
    const groups = groupSamples(samples);
    fill('diffs', el('p', {class: 'muted'}, 'The newest ' + num(samples.length) + ' stored samples, in ' + num(groups.length) +
      ' group(s) of identical differences; each shows its newest example.'),
    groups.map((g) => {
      const s = g.newest;
      return el('article', {class: 'sample group', 'data-count': g.count},
        el('header', {},
          el('span', {class: 'count', title: 'samples with exactly these differences'}, '×' + num(g.count)),
          el('span', {class: 'time'}, g.count > 1 ? clock(g.oldest.time) + '–' + clock(s.time) : clock(s.time)),
          el('span', {class: 'target'}, 'vs ' + s.target),
          el('code', {class: 'request'}, s.method + ' ' + s.uri),
          el('span', {class: 'status'}, 'primary ', el('b', {class: statusClass(s.primary_status)}, String(s.primary_status)),
            ' · shadow ', el('b', {class: statusClass(s.shadow_status)}, String(s.shadow_status))),
          s.request_id ? el('span', {class: 'muted'}, 'id ' + s.request_id) : null,
          g.values.size > 1 ? el('span', {class: 'muted'}, 'values vary; newest shown') : null),
        s.note ? el('p', {class: 'note'}, s.note) : null,
        table(['field', 'kind', 'primary', 'shadow', ''], (s.differences || []).map((d) => {
          const ign = el('button', {type: 'button', class: 'small ignore-field', title: 'how to ignore this field'}, 'ignore…');
          ign.addEventListener('click', () => showIgnore(normPath(d.path)));
          return el('tr', {class: isFiltered(d.path) ? 'selected' : null},
            el('td', {class: 'diff-path'}, d.path),
            el('td', {class: 'kind'}, d.kind),
            el('td', {class: 'val primary'}, d.primary === '' ? el('i', {}, 'absent') : d.primary),
            el('td', {class: 'val shadow'}, d.shadow === '' ? el('i', {}, 'absent') : d.shadow),
            el('td', {class: 'act'}, ign));
        }), {class: 'difftable'}),
        s.omitted ? el('p', {class: 'muted'}, '+' + s.omitted + ' more differences not stored') : null);
    }));
  }

  function isFiltered(path) {
    if (!state.field) return false;
    return path === state.field || normPath(path) === state.field;
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
    state.ignoreFor = '';
    $('field').value = '';
    state.armed = '';
    fill('rollout-message');
    fill('noise-message');
    refresh();
  });
  document.addEventListener('visibilitychange', () => {
    if (!document.hidden) refresh();
  });
  refresh();
})();
