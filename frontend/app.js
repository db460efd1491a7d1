/*
 * lb dashboard — vanilla JS, no build step, nothing fetched but the two APIs of docs/ADMIN_API.md.
 *
 * Where the APIs are
 *   admin API:   ?admin=URL, else the page's own origin when served over http(s), else
 *                http://127.0.0.1:8004 (page opened from disk).
 *   supervisor:  ?supervisor=URL, else http://127.0.0.1:8005.
 *   ?token=T     sent as "Authorization: Bearer T" on the admin API's POSTs (admin_token).
 *
 * Stable selectors (for tests; keep them when restyling)
 *   #conn[data-status]                         connection to the admin API: connecting | live | disconnected
 *   #status-line  [data-testid=status-line]    visible only while disconnected ("Disconnected … retrying…")
 *   #t-requests #t-rps #t-active #t-inflight #t-errors #t-uptime #t-algorithm     header totals
 *   #backends [data-pool="POOL"] .cards        one section per pool (pools.js documents its head)
 *   #backends [data-backend="NAME"]            one card per backend, in its pool's section; attribute data-state = up|down|draining|removed
 *     [data-role="state"]                      textContent is exactly the state word
 *     [data-role="backup"]                     visible for a backup backend; [data-role="warmup"] visible during slow start
 *     [data-role="name"] [data-role="address"] [data-role="check"] (data-ok=true|false) [data-role="since"]
 *     [data-role="requests"] [data-role="share"] [data-role="rps"] [data-role="active"]
 *     [data-role="p50"] [data-role="p99"] [data-role="errors"] [data-role="retries"]
 *     [data-role="process"]                    supervisor's view: "pid N" / "stopped" (data-proc-state)
 *     [data-action="drain"] [data-action="enable"]   admin API; only the relevant one is visible
 *     [data-action="kill"]  [data-action="start"]    supervisor; visible only when GET /api/processes
 *                                                    answers and lists a process of the same name
 *   #processes [data-process="NAME"]           processes without a backend card (e.g. lb), with
 *                                              [data-action="kill"|"start"]
 *   #sup-status[data-ok]                       "true" once the supervisor answered
 *   #chart-rps #chart-latency #chart-states    canvases; #legend-rps #legend-latency legends
 *   #log-body [role="row"]                     request log rows in view, newest first. The log keeps
 *                                              ≤ 500 rows but is a virtual list: only the rows scrolled
 *                                              into view (plus a few) are in the DOM. Each row has
 *                                              data-index (0 = newest), data-backend (name or "-"),
 *                                              data-status (code), data-class (2xx|3xx|4xx|5xx|other);
 *                                              cells [data-col=time|method|target|status|backend|pool|route|duration|bytes|client];
 *                                              data-pool (name or "-")
 *   #log-pause [data-action="pause-log"]       aria-pressed="true" while paused
 *   #log-backend                               <select>: "" all, "-" balancer's own answers, or a name
 *   #log-pool                                  <select>: "" all, "-" no pool, or a pool (shown with several pools)
 *   #log[data-pools="single"|"many"]           pool and route columns only with several pools or routes
 *   #log-status [data-class="2xx"|…]           toggle buttons, aria-pressed
 *   #timeline li                               health/config/connection events, newest first;
 *                                              data-kind = health|config|conn|process,
 *                                              data-backend, data-state (health) / data-action (config)
 *   .toast                                     error/info messages
 *
 * Everything from the network is put into the page with textContent / DOM nodes, never innerHTML.
 */
'use strict';

(() => {
  // ------------------------------------------------------------------ configuration
  const params = new URLSearchParams(location.search);
  const trimSlash = (u) => u.replace(/\/+$/, '');
  const ADMIN = trimSlash(params.get('admin') ||
    (/^https?:$/.test(location.protocol) ? location.origin : 'http://127.0.0.1:8004'));
  const SUP = trimSlash(params.get('supervisor') || 'http://127.0.0.1:8005');
  const TOKEN = params.get('token');

  const STALE_MS = 5000;             // no event for this long on a "live" stream: reconnect
  const SUP_POLL_MS = 2000;

  // ------------------------------------------------------------------ shared helpers (util.js, charts.js)
  const { $, h, setText, fmtInt, fmtRate, fmtMs, fmtBytes, fmtDuration, fmtAgo, pad2, fmtClock, num, statusClass,
    toast, request, theme, readTheme, colorOf } = window.LB;
  const { TimeChart, StateStrip } = window.LB.charts;
  const { WINDOW_MS } = window.LB;

  // ------------------------------------------------------------------ store
  let doc = null;         // last /api/state document
  let docWall = 0;        // Date.now() when it arrived
  let base = null;        // counters of the last sample: {uptime, wall, total, per:{name:requests}}
  const samples = [];     // {t, total, per:{name:{rps,p50,p99,state}}} or {t, gap:true}
  const order = [];       // backend names in display order (first seen first)
  const cards = new Map(); // name -> card record
  let procs = null;       // Map name -> process JSON, null while the supervisor does not answer
  let supOk = false;
  const conn = { status: 'connecting', es: null, timer: null, backoff: 1000, retryAt: 0, lastEventAt: 0, downSince: 0, everLive: false };

  function pushGap(t) {
    if (samples.length && !samples[samples.length - 1].gap) samples.push({ t, gap: true });
  }
  function trimSamples() {
    const cut = Date.now() - WINDOW_MS - 10000;
    let i = 0;
    while (i < samples.length && samples[i].t < cut) i++;
    if (i) samples.splice(0, i);
  }

  /** Takes a /api/state document (from GET or a `stats` event). */
  function ingest(d) {
    if (!d || !Array.isArray(d.backends)) return;
    const wall = Date.now();
    const prev = doc;
    if (prev && num(d.uptime_ms) != null && num(prev.uptime_ms) != null && d.uptime_ms < prev.uptime_ms) {
      // A GET /api/state answer can arrive after a newer `stats` event: drop it. A much
      // smaller uptime means the balancer restarted.
      if (prev.uptime_ms - d.uptime_ms < 2000) return;
      addTimeline({ kind: 'conn', state: 'up', time_ms: wall, text: 'balancer restarted', why: `up for ${fmtDuration(d.uptime_ms)}` });
    }
    doc = d;
    docWall = wall;

    const cur = { uptime: num(d.uptime_ms), wall, total: num(d.totals && d.totals.requests), per: {} };
    for (const b of d.backends) cur.per[b.name] = num(b.requests);

    if (base && ((cur.uptime != null && base.uptime != null && cur.uptime < base.uptime) ||
                 (cur.total != null && base.total != null && cur.total < base.total))) {
      base = null;  // restarted: counters start again
      pushGap(wall - 1);
    }
    if (!base) {
      base = cur;
    } else {
      const dtUp = cur.uptime != null && base.uptime != null ? (cur.uptime - base.uptime) / 1000 : 0;
      const dtWall = (wall - base.wall) / 1000;
      const dt = dtUp > 0 ? dtUp : dtWall;
      if (dt >= 0.5) {
        if (dtWall > 3.5) pushGap(base.wall + 1);
        const s = { t: wall, total: null, per: {} };
        if (cur.total != null && base.total != null) s.total = Math.max(0, cur.total - base.total) / dt;
        for (const b of d.backends) {
          const was = base.per[b.name];
          const now = cur.per[b.name];
          s.per[b.name] = {
            rps: was != null && now != null && now >= was ? (now - was) / dt : null,
            p50: num(b.latency_p50_ms), p99: num(b.latency_p99_ms), state: b.state,
          };
        }
        samples.push(s);
        trimSamples();
        base = cur;
      }
    }
    pools.render(d);
    updateBackends(d, prev);
    renderHeader();
    renderLegends();
    charts.forEach((c) => c.draw());
  }

  const lastSample = () => {
    for (let i = samples.length - 1; i >= 0; i--) if (!samples[i].gap) return samples[i];
    return null;
  };

  const pools = window.LB.createPools($('#backends'));

  // ------------------------------------------------------------------ header
  function renderHeader() {
    if (!doc) return;
    const t = doc.totals || {};
    const s = lastSample();
    setText($('#t-requests'), fmtInt(t.requests));
    setText($('#t-rps'), conn.status === 'live' && s ? fmtRate(s.total) : '—');
    setText($('#t-active'), fmtInt(t.active_connections));
    setText($('#t-inflight'), fmtInt(t.in_flight));
    setText($('#t-errors'), fmtInt(t.errors));
    const cfg = doc.config || {};
    setText($('#t-algorithm'), cfg.algorithm || '—');
    $('#t-algorithm').title = `retries: ${cfg.retries ?? '—'}`;
    const parts = [];
    if (doc.version) parts.push(`v${doc.version}`);
    if (cfg.listen) parts.push(`listening on ${cfg.listen}`);
    setText($('#meta'), parts.join(' · ') || '—');
    const hc = cfg.health;
    const span = (ms) => (num(ms) == null ? '?' : ms < 1000 ? `${+ms.toFixed(1)} ms` : `${+(ms / 1000).toFixed(2)} s`);
    setText($('#health-config'), hc ? `health: GET ${hc.path} every ${span(hc.interval_ms)}, timeout ${span(hc.timeout_ms)}, rise ${hc.rise} / fall ${hc.fall}` : '');
    renderUptime();
  }
  function renderUptime() {
    if (!doc || num(doc.uptime_ms) == null) return;
    const up = doc.uptime_ms + (conn.status === 'live' ? Date.now() - docWall : 0);
    setText($('#t-uptime'), fmtDuration(up));
  }

  // ------------------------------------------------------------------ backend cards
  function makeCard(name) {
    const role = (r, tag = 'span', cls) => h(tag, { 'data-role': r, class: cls });
    const r = {};
    const stat = (label, key, title) => {
      r[key] = h('dd', { 'data-role': key }, '—');
      return h('div', { title }, h('dt', null, label), r[key]);
    };
    r.name = role('name', 'span', 'card-name');
    r.state = role('state', 'span', 'badge');
    r.backup = h('span', { 'data-role': 'backup', class: 'badge backup', title: 'takes requests only while every primary of its pool is down', hidden: true }, 'backup');
    r.warmup = h('span', { 'data-role': 'warmup', class: 'warmup', hidden: true });
    r.address = role('address', 'span', 'addr');
    r.weight = h('span');
    r.conns = h('span');
    r.checkMark = h('span', { class: 'mark' });
    r.checkDetail = h('span', { class: 'detail' });
    r.checkAgo = h('span', { class: 'ago' });
    r.check = h('div', { class: 'check', 'data-role': 'check' }, r.checkMark, r.checkDetail, r.checkAgo);
    r.since = role('since', 'div', 'since');
    r.shareFill = h('span');
    r.proc = h('span', { class: 'proc', 'data-role': 'process' });
    const act = (action, label, cls, title) => {
      const b = h('button', { type: 'button', class: `btn ${cls}`, 'data-action': action, title, hidden: true }, label);
      b.addEventListener('click', () => onCardAction(name, action, b));
      return b;
    };
    r.drain = act('drain', 'Drain', 'warn', 'Stop sending new requests; in-flight ones finish');
    r.enable = act('enable', 'Enable', 'go', 'Put back in rotation');
    r.kill = act('kill', 'Kill', 'danger', 'SIGKILL the backend process (like a crash)');
    r.start = act('start', 'Start', 'go', 'Start the backend process again');
    const el = h('article', { class: 'card', 'data-backend': name, 'data-state': 'up' },
      h('div', { class: 'card-head' }, h('span', { class: 'swatch' }), r.name, r.backup, r.state),
      h('div', { class: 'card-sub' }, r.address, r.weight, r.conns, r.warmup),
      r.check,
      r.since,
      h('dl', { class: 'stats' },
        stat('Requests', 'requests'), stat('Share', 'share', 'share of the requests its pool received'),
        stat('Req/s', 'rps'), stat('Active', 'active', 'requests in flight on this backend now'),
        stat('p50', 'p50', 'median latency over the last minute'), stat('p99', 'p99', '99th percentile latency over the last minute'),
        stat('Errors', 'errors'), stat('Retries', 'retries')),
      h('div', { class: 'sharebar', 'aria-hidden': 'true' }, r.shareFill),
      h('div', { class: 'card-actions' }, r.drain, r.enable, r.kill, r.start, r.proc));
    el.style.setProperty('--c', colorOf(name));
    setText(r.name, name);
    return { name, el, r, data: null, state: null, removed: false };
  }

  function ensureCard(name) {
    let c = cards.get(name);
    if (!c) {
      c = makeCard(name);
      cards.set(name, c);
      order.push(name);
      $('#backends-empty').hidden = true;
      const opt = h('option', { value: name }, name);
      $('#log-backend').append(opt);
    }
    return c;
  }

  function updateBackends(d, prev) {
    const seen = new Set();
    for (const b of d.backends) {
      seen.add(b.name);
      const c = ensureCard(b.name);
      pools.place(c.el, b.pool);
      const before = c.state;
      c.data = b;
      c.removed = b.state === 'removed';
      setCardState(c, b.state);
      if (!prev || before == null) {
        addTimeline({ kind: 'health', initial: true, backend: b.name, state: b.state,
          time_ms: num(b.last_change_ms) || Date.now(), why: `${b.last_change_reason || 'state'} · as the dashboard found it` });
      } else if (before !== b.state) {
        derivedChange(c, before, b);
      }
      renderCard(c);
    }
    // Backends that left the document were removed.
    for (const c of cards.values()) {
      if (!seen.has(c.name) && !c.removed) {
        c.removed = true;
        if (c.state !== 'removed') {
          setCardState(c, 'removed');
          if (!recentEvent(c.name, 'removed')) {
            addTimeline({ kind: 'health', backend: c.name, state: 'removed', time_ms: Date.now(), why: 'no longer in the balancer\'s list' });
          }
        }
        renderCardButtons(c);
      }
    }
  }

  function renderCard(c) {
    const b = c.data;
    if (!b) return;
    const r = c.r;
    // The share is within the backend's pool: pools serve different requests.
    let sum = 0;
    if (doc) for (const x of doc.backends) if (x.pool === b.pool) sum += num(x.requests) || 0;
    r.backup.hidden = !b.backup;
    const warm = num(b.slow_start_factor);
    r.warmup.hidden = warm == null || warm >= 1;
    setText(r.warmup, warm != null && warm < 1 ? `slow start: ${Math.round(warm * 100)}% of its weight` : '');
    const s = lastSample();
    setText(r.address, b.address || '');
    setText(r.weight, b.weight != null ? `weight ${b.weight}` : '');
    setText(r.conns, b.connections != null ? `${fmtInt(b.connections)} conns opened` : '');
    setText(r.requests, fmtInt(b.requests));
    const share = sum > 0 && num(b.requests) != null ? (100 * b.requests) / sum : null;
    setText(r.share, share == null ? '—' : `${share.toFixed(share < 10 ? 1 : 0)}%`);
    r.shareFill.style.width = `${share || 0}%`;
    const ps = s && s.per[b.name];
    setText(r.rps, conn.status === 'live' && ps ? fmtRate(ps.rps) : '—');
    setText(r.active, fmtInt(b.in_flight));
    setText(r.p50, fmtMs(num(b.latency_p50_ms)));
    setText(r.p99, fmtMs(num(b.latency_p99_ms)));
    setText(r.errors, fmtInt(b.errors));
    setText(r.retries, fmtInt(b.retries));
    r.retries.parentElement.title = `retries ${fmtInt(b.retries)} · redispatches ${fmtInt(b.redispatches)}`;
    renderCardTimes(c);
    renderCardButtons(c);
  }

  function setCardState(c, state) {
    c.state = state;
    c.el.dataset.state = state;
    setText(c.r.state, state);
  }

  function renderCardTimes(c) {
    const b = c.data;
    if (!b) return;
    const r = c.r;
    const lc = b.last_check;
    if (lc && typeof lc === 'object') {
      r.check.dataset.ok = String(!!lc.ok);
      setText(r.checkMark, lc.ok ? '✓' : '✗');
      const bits = [lc.detail || (lc.ok ? 'ok' : 'failed')];
      if (num(lc.latency_ms) != null) bits.push(fmtMs(lc.latency_ms));
      setText(r.checkDetail, bits.join(' · '));
      setText(r.checkAgo, `· ${fmtAgo(lc.at_ms)}`);
      r.check.title = `last health check at ${lc.at_ms ? new Date(lc.at_ms).toLocaleString() : '?'}`;
    } else {
      delete r.check.dataset.ok;
      setText(r.checkMark, '…');
      setText(r.checkDetail, 'not checked yet');
      setText(r.checkAgo, '');
    }
    if (c.removed && !c.data) return;
    const since = num(b.last_change_ms);
    const reason = b.last_change_reason ? ` — ${b.last_change_reason}` : '';
    const flips = b.flips ? ` · ${b.flips} flip${b.flips === 1 ? '' : 's'}` : '';
    setText(r.since, since ? `${c.state} for ${fmtDuration(Date.now() - since)}${reason}${flips}` : `${c.state}${reason}`);
    r.since.title = since ? `since ${new Date(since).toLocaleString()}` : '';
  }

  function renderCardButtons(c) {
    const r = c.r;
    const live = !c.removed && conn.status === 'live';
    r.drain.hidden = !live || c.state === 'draining';
    r.enable.hidden = !live || c.state !== 'draining';
    const p = procs && procs.get(c.name);
    const running = p && p.state === 'running';
    r.kill.hidden = !supOk || !p || !running;
    r.start.hidden = !supOk || !p || running;
    if (supOk && p) {
      r.proc.hidden = false;
      r.proc.dataset.procState = p.state;
      setText(r.proc, running ? (p.pid != null ? `pid ${p.pid}` : 'running') : 'process stopped');
    } else {
      r.proc.hidden = true;
    }
  }

  async function onCardAction(name, action, btn) {
    btn.disabled = true;
    try {
      if (action === 'drain' || action === 'enable') {
        const headers = TOKEN ? { Authorization: `Bearer ${TOKEN}` } : undefined;
        const b = await request(`${ADMIN}/api/backends/${encodeURIComponent(name)}/${action}`, { method: 'POST', headers });
        const c = cards.get(name);
        if (b && typeof b === 'object' && b.state && c) {
          // The answer is the backend's JSON: show it now rather than at the next stats event.
          const before = c.state;
          c.data = { ...c.data, ...b };
          setCardState(c, b.state);
          if (before !== b.state) derivedChange(c, before, c.data, true);
          renderCardTimes(c);
          renderCardButtons(c);
        }
        toast(`${action === 'drain' ? 'Draining' : 'Enabled'} ${name}`);
      } else {
        await processAction(name, action);
      }
    } catch (e) {
      toast(`${action} ${name} failed: ${e.message}`, 'error');
    } finally {
      btn.disabled = false;
    }
  }

  async function processAction(name, action) {
    const p = await request(`${SUP}/api/processes/${encodeURIComponent(name)}/${action}`, { method: 'POST' });
    if (p && typeof p === 'object' && p.name && procs) procs.set(p.name, p);
    addTimeline({ kind: 'process', action, backend: name, time_ms: Date.now(),
      why: action === 'kill' ? 'SIGKILL via the supervisor' : `started via the supervisor${p && p.pid ? ` (pid ${p.pid})` : ''}` });
    renderProcesses();
    pollSupervisor();
  }

  // ------------------------------------------------------------------ supervisor
  let supSeq = 0, supApplied = 0;
  async function pollSupervisor() {
    const seq = ++supSeq;
    let list = null;
    try {
      list = await request(`${SUP}/api/processes`, {}, 1800);
      if (!Array.isArray(list)) throw new Error('not a list');
    } catch {
      list = null;
    }
    if (seq < supApplied) return;
    supApplied = seq;
    const wasOk = supOk;
    supOk = !!list;
    procs = list ? new Map(list.filter((p) => p && typeof p.name === 'string').map((p) => [p.name, p])) : null;
    const st = $('#sup-status');
    st.dataset.ok = String(supOk);
    setText(st, supOk ? `· ${list.length} process${list.length === 1 ? '' : 'es'}` : '· not reachable (kill/start hidden)');
    if (wasOk !== supOk && wasOk) toast('Supervisor not reachable: Kill/Start hidden');
    renderProcesses();
  }

  const procChips = new Map();
  function renderProcesses() {
    for (const c of cards.values()) renderCardButtons(c);
    const box = $('#processes');
    const others = supOk && procs ? [...procs.values()].filter((p) => !cards.has(p.name)) : [];
    box.hidden = others.length === 0;
    const keep = new Set();
    for (const p of others) {
      keep.add(p.name);
      let chip = procChips.get(p.name);
      if (!chip) {
        const label = h('span');
        const kill = h('button', { type: 'button', class: 'btn danger', 'data-action': 'kill' }, 'Kill');
        const start = h('button', { type: 'button', class: 'btn go', 'data-action': 'start' }, 'Start');
        const go = (action, btn) => async () => {
          btn.disabled = true;
          try { await processAction(p.name, action); } catch (e) { toast(`${action} ${p.name} failed: ${e.message}`, 'error'); }
          btn.disabled = false;
        };
        kill.addEventListener('click', go('kill', kill));
        start.addEventListener('click', go('start', start));
        const el = h('span', { class: 'process', 'data-process': p.name }, h('span', { class: 'dot' }), label, kill, start);
        chip = { el, label, kill, start };
        procChips.set(p.name, chip);
        box.append(el);
      }
      const running = p.state === 'running';
      chip.el.dataset.procState = p.state;
      chip.el.title = `${p.kind || 'process'}${p.port ? ` on port ${p.port}` : ''}${p.pid ? `, pid ${p.pid}` : ''}`;
      setText(chip.label, `${p.name} ${running ? 'running' : 'stopped'}`);
      chip.kill.hidden = !running;
      chip.start.hidden = running;
    }
    for (const [name, chip] of procChips) if (!keep.has(name)) { chip.el.remove(); procChips.delete(name); }
  }


  const fmtRateAxis = (v) => (v >= 10000 ? `${+(v / 1000).toFixed(1)}k` : `${+v.toFixed(2)}`);
  const fmtMsAxis = (v) => (v >= 1000 ? `${+(v / 1000).toFixed(2)} s` : `${+v.toPrecision(3)}`);
  const liveNames = () => order.filter((n) => !cards.get(n).removed);
  const hexAlpha = (hex, a) => { const n = parseInt(hex.slice(1), 16); return `rgba(${n >> 16},${(n >> 8) & 255},${n & 255},${a})`; };

  const rpsChart = new TimeChart($('#chart-rps'), {
    samples: () => samples, ready: () => doc != null,
    unit: 'req/s', fmtY: fmtRateAxis, minMax: 10,
    series: () => [
      { key: '__total', color: theme.text, width: 2, fill: theme.text.startsWith('#') ? hexAlpha(theme.text, 0.06) : null, value: (s) => s.total },
      ...order.map((n) => ({ key: n, color: colorOf(n), width: 1.5, value: (s) => (s.per[n] ? s.per[n].rps : null) })),
    ],
    tooltip: (s) => [
      { key: '__total', label: 'total', color: theme.text, value: fmtRate(s.total) },
      ...order.filter((n) => s.per[n]).map((n) => ({ key: n, label: n, color: colorOf(n), value: fmtRate(s.per[n].rps) })),
    ],
  });
  const latChart = new TimeChart($('#chart-latency'), {
    samples: () => samples, ready: () => doc != null,
    unit: 'ms (log)', fmtY: fmtMsAxis, log: true,
    series: () => order.flatMap((n) => [
      { key: n, color: colorOf(n), width: 1.75, value: (s) => (s.per[n] ? s.per[n].p50 : null) },
      { key: n, color: colorOf(n), width: 1.25, dash: [5, 4], value: (s) => (s.per[n] ? s.per[n].p99 : null) },
    ]),
    tooltip: (s) => order.filter((n) => s.per[n]).map((n) => ({
      key: n, label: n, color: colorOf(n), value: `${fmtMs(s.per[n].p50)} / ${fmtMs(s.per[n].p99)}`,
    })),
  });

  const stateStrip = new StateStrip($('#chart-states'), {
    series: () => [], tooltip: () => [], samples: () => samples, ready: () => doc != null, names: () => order,
  });
  const charts = [rpsChart, latChart, stateStrip];
  window.addEventListener('resize', () => charts.forEach((c) => c.resize()));
  matchMedia('(prefers-color-scheme: dark)').addEventListener('change', () => { readTheme(); charts.forEach((c) => c.draw()); });

  // Legends: one toggle per series (clicking hides/shows it on the chart).
  function legendItem(box, chart, key, label, color) {
    let b = box.querySelector(`button[data-key="${CSS.escape(key)}"]`);
    if (!b) {
      const val = h('span', { class: 'val' });
      b = h('button', { type: 'button', 'data-key': key, 'aria-pressed': 'true' }, h('span', { class: 'sw' }), label, val);
      b.style.setProperty('--c', color);
      b.addEventListener('click', () => {
        const off = !chart.hidden.has(key);
        if (off) chart.hidden.add(key); else chart.hidden.delete(key);
        b.setAttribute('aria-pressed', String(!off));
        chart.draw();
      });
      box.append(b);
    }
    return b.lastElementChild;
  }
  function renderLegends() {
    const s = lastSample();
    const live = conn.status === 'live';
    setText(legendItem($('#legend-rps'), rpsChart, '__total', 'total', theme.text), live && s ? fmtRate(s.total) : '');
    for (const n of order) {
      const p = s && s.per[n];
      setText(legendItem($('#legend-rps'), rpsChart, n, n, colorOf(n)), live && p ? fmtRate(p.rps) : '');
      setText(legendItem($('#legend-latency'), latChart, n, n, colorOf(n)), p && p.p50 != null ? `${fmtMs(p.p50)} / ${fmtMs(p.p99)}` : '');
    }
  }

  // ------------------------------------------------------------------ request log (log.js)
  const log = window.LB.createLog({ dropped: () => (doc && doc.totals ? num(doc.totals.events_dropped) : null) });

  // ------------------------------------------------------------------ health / config timeline (timeline.js)
  const timeline = window.LB.createTimeline();
  const { recentEvent, derivedChange } = timeline;
  const addTimeline = timeline.add;

  function onHealth(ev) {
    if (!ev || typeof ev.backend !== 'string') return;
    timeline.note(ev.backend, { state: ev.state });
    timeline.add({ kind: 'health', backend: ev.backend, state: ev.state, time_ms: ev.time_ms, why: ev.reason || '' });
    const c = cards.get(ev.backend);
    if (c && ev.state) {
      setCardState(c, ev.state);
      c.removed = ev.state === 'removed';
      if (c.data) { c.data = { ...c.data, state: ev.state, last_change_ms: ev.time_ms, last_change_reason: ev.reason }; }
      renderCardTimes(c);
      renderCardButtons(c);
    }
  }

  // ------------------------------------------------------------------ connection (SSE)

  function setConn(status) {
    if (conn.status === status) return;
    const was = conn.status;
    conn.status = status;
    $('#conn').dataset.status = status;
    document.body.classList.toggle('stale', status === 'disconnected');
    if (status === 'live') {
      conn.backoff = 1000;
      if (conn.everLive && was === 'disconnected') {
        addTimeline({ kind: 'conn', state: 'up', time_ms: Date.now(), text: 'reconnected', why: `to ${ADMIN}` });
      }
      conn.everLive = true;
      conn.downSince = 0;
    } else if (status === 'disconnected') {
      conn.downSince = Date.now();
      if (was === 'live') addTimeline({ kind: 'conn', state: 'down', time_ms: Date.now(), text: 'lost the balancer', why: `event stream from ${ADMIN} closed` });
    }
    renderConn();
    renderHeader();
    renderLegends();
    for (const c of cards.values()) renderCard(c);
  }

  function renderConn() {
    const line = $('#status-line');
    if (conn.status === 'live') {
      setText($('#conn-text'), 'live');
      line.hidden = true;
    } else if (conn.status === 'connecting') {
      setText($('#conn-text'), 'connecting…');
      line.hidden = true;
    } else {
      setText($('#conn-text'), 'disconnected');
      const wait = conn.timer && conn.retryAt ? Math.max(0, Math.ceil((conn.retryAt - Date.now()) / 1000)) : 0;
      const since = conn.downSince ? ` (for ${fmtDuration(Date.now() - conn.downSince)})` : '';
      setText(line, `Disconnected from the balancer at ${ADMIN}${since} — ${wait > 0 ? `retrying in ${wait}s…` : 'retrying…'}`);
      line.hidden = false;
    }
  }

  function connect() {
    clearTimeout(conn.timer);
    conn.timer = null;
    if (conn.es) conn.es.close();
    let es;
    try {
      es = new EventSource(`${ADMIN}/api/events`);
    } catch (e) {
      toast(`Bad admin URL: ${e.message}`, 'error');
      return;
    }
    conn.es = es;
    const parse = (fn) => (e) => {
      if (conn.es !== es) return;
      conn.lastEventAt = Date.now();
      let data;
      try { data = JSON.parse(e.data); } catch { return; }
      if (conn.status !== 'live') setConn('live');
      fn(data);
    };
    es.addEventListener('open', () => {
      if (conn.es !== es) return;
      conn.lastEventAt = Date.now();
      setConn('live');
      loadState();
    });
    es.addEventListener('stats', parse(ingest));
    es.addEventListener('request', parse(log.onRequest));
    es.addEventListener('health', parse(onHealth));
    es.addEventListener('config', parse(timeline.onConfig));
    es.addEventListener('error', () => {
      if (conn.es !== es) return;
      setConn('disconnected');
      if (es.readyState === EventSource.CLOSED) {
        // The browser gave up (e.g. a non-200 answer): retry ourselves with backoff.
        es.close();
        conn.es = null;
        scheduleReconnect();
      }
      // Otherwise (CONNECTING) the browser is already reconnecting by itself.
    });
  }

  function scheduleReconnect() {
    clearTimeout(conn.timer);
    const delay = conn.backoff;
    conn.backoff = Math.min(conn.backoff * 2, 15000);
    conn.retryAt = Date.now() + delay;
    conn.timer = setTimeout(() => { conn.timer = null; connect(); }, delay);
    renderConn();
  }

  async function loadState() {
    try {
      ingest(await request(`${ADMIN}/api/state`, {}, 4000));
    } catch {
      /* the event stream will bring it */
    }
  }

  // ------------------------------------------------------------------ ticker
  function tick() {
    const now = performance.now();
    // watchdog: a "live" stream that stopped delivering (stats come every second)
    if (conn.status === 'live' && Date.now() - conn.lastEventAt > STALE_MS) {
      if (conn.es) conn.es.close();
      conn.es = null;
      setConn('disconnected');
      scheduleReconnect();
    }
    renderConn();
    renderUptime();
    for (const c of cards.values()) renderCardTimes(c);
    log.tick(now);
    charts.forEach((c) => c.draw());
  }

  // ------------------------------------------------------------------ start
  setText($('#admin-url'), ADMIN);
  setText($('#sup-url'), SUP);
  loadState();
  connect();
  pollSupervisor();
  setInterval(pollSupervisor, SUP_POLL_MS);
  setInterval(tick, 1000);
  log.rebuild();
})();
