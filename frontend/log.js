/*
 * lb dashboard: the request log, as `window.LB.createLog`. Request events are kept in a ring
 * (for re-filtering), shown newest first in a virtual list (only the rows in view are in the
 * DOM, so its cost does not grow with the event rate), and filtered by backend and status
 * class. Its selectors are documented at the top of app.js.
 */
'use strict';

(() => {
  const { $, h, setText, fmtInt, fmtRate, fmtMs, fmtBytes, fmtClock, num, statusClass, colorOf } = window.LB;
  const LOG_CAP = 500;               // rows in the request log
  const RING_CAP = 5000;             // request events kept in memory (for re-filtering)
  const LOG_MIN_FLUSH_MS = 100;      // at most 10 log DOM updates per second

  /** opts.dropped(): how many events the balancer dropped (shown in the log's info line). */
  window.LB.createLog = (opts) => {
    const logBody = $('#log-body');
    const ring = new Array(RING_CAP);
    let ringLen = 0, ringHead = 0;        // ringHead = index of the next write
    let pending = [];
    let paused = false, pausedNew = 0;
    let flushScheduled = false, lastFlush = 0;
    let evCount = 0, evRate = 0, evCountAt = performance.now();
    const filter = { backend: '', pool: '', classes: new Set(['2xx', '3xx', '4xx', '5xx']) };

    const matches = (ev) => {
      if (filter.pool && (ev.pool == null ? '-' : ev.pool) !== filter.pool) return false;
      if (filter.backend) {
        const b = ev.backend == null ? '-' : ev.backend;
        if (b !== filter.backend) return false;
      }
      const cls = statusClass(ev.status);
      return cls === 'other' || filter.classes.has(cls);
    };

    // The log is a virtual list: logRows holds up to LOG_CAP events (newest first) and only the
    // rows in view (plus a few) exist in the DOM, so its cost does not grow with the event rate.
    const logScroll = $('#log-scroll');
    let logRows = [];
    const rowPool = [];
    let rowH = 25;
    /** How the protocol column names what the client spoke. */
    const PROTO_SHORT = { 'HTTP/2': 'h2', 'HTTP/1.1': '1.1', 'HTTP/1.0': '1.0' };
    const COLS = ['time', 'method', 'proto', 'target', 'status', 'backend', 'pool', 'route', 'duration', 'bytes', 'client'];

    const rowTemplate = (() => {
      const row = h('div', { class: 'log-row', role: 'row' });
      for (const col of COLS) row.append(h('span', { class: `c-${col === 'duration' ? 'dur' : col}`, role: 'cell', 'data-col': col }));
      row.children[0].append(h('span'), h('span', { class: 'ms' }));
      row.children[4].append(h('span'));
      row.children[5].append(h('span'));
      return row;
    })();

    function fillRow(row, ev) {
      const td = row.children;
      const cls = statusClass(ev.status);
      row.dataset.backend = ev.backend == null ? '-' : String(ev.backend);
      row.dataset.status = String(ev.status);
      row.dataset.class = cls;
      const t = num(ev.time_ms);
      td[0].firstChild.textContent = t != null ? fmtClock(t) : '';
      td[0].lastChild.textContent = t != null ? `.${String(new Date(t).getMilliseconds()).padStart(3, '0')}` : '';
      td[1].textContent = ev.method == null ? '' : String(ev.method);
      const proto = ev.protocol == null ? '' : String(ev.protocol);
      td[2].textContent = PROTO_SHORT[proto] || (proto === '-' ? '' : proto);
      td[2].title = proto;
      const target = ev.target == null ? '' : String(ev.target);
      td[3].textContent = target;
      // request_id = true: the id the backend and the access log have, one hover away.
      const rid = ev.request_id == null ? '' : String(ev.request_id);
      row.dataset.requestId = rid;
      td[3].title = rid ? `${target}\nX-Request-Id: ${rid}` : target;
      const st = td[4].firstChild;
      st.className = `st ${cls === 'other' ? 'sx' : `s${cls[0]}`}`;
      st.textContent = ev.status == null ? '—' : String(ev.status);
      const be = td[5].firstChild;
      if (ev.backend == null) {
        be.className = 'be none';
        be.textContent = 'balancer';
        be.style.removeProperty('--c');
      } else {
        be.className = 'be';
        be.textContent = String(ev.backend);
        be.style.setProperty('--c', colorOf(String(ev.backend)));
      }
      const pool = ev.pool == null ? '' : String(ev.pool);
      row.dataset.pool = pool || '-';
      td[6].textContent = pool || '—';
      td[7].textContent = ev.route == null ? '—' : String(ev.route);
      td[7].title = ev.route == null ? 'no route matched' : `route ${ev.route}`;
      td[8].textContent = fmtMs(num(ev.duration_ms));
      td[9].textContent = fmtBytes(num(ev.bytes));
      td[10].textContent = ev.client == null ? '' : String(ev.client);
      td[10].title = rid ? `X-Request-Id: ${rid}` : '';
    }

    /** Puts the rows in view into the DOM (reusing row elements). */
    function renderLogWindow() {
      const body = logBody;
      const headerH = body.offsetTop;
      const top = Math.max(0, logScroll.scrollTop - headerH);
      const first = Math.max(0, Math.floor(top / rowH) - 4);
      const last = Math.min(logRows.length, Math.ceil((top + logScroll.clientHeight) / rowH) + 4);
      const n = Math.max(0, last - first);
      while (rowPool.length < n) rowPool.push(rowTemplate.cloneNode(true));
      for (let k = 0; k < n; k++) {
        const row = rowPool[k];
        const i = first + k;
        const ev = logRows[i];
        if (row.__ev !== ev) { fillRow(row, ev); row.__ev = ev; }
        if (row.__i !== i) { row.style.transform = `translateY(${i * rowH}px)`; row.__i = i; }
        row.dataset.index = String(i);
        if (row.parentNode !== body) body.append(row);
      }
      for (let k = n; k < rowPool.length; k++) {
        const row = rowPool[k];
        if (row.parentNode) row.remove();
        row.__ev = null; row.__i = -1;
      }
      // keep the DOM order the same as the visual order (newest first) for readers and tests
      for (let k = 0; k < n; k++) if (body.children[k] !== rowPool[k]) body.insertBefore(rowPool[k], body.children[k] || null);
    }

    function setLogRows(rows, added) {
      const anchored = logScroll.scrollTop > logBody.offsetTop / 2 && added > 0;
      logRows = rows;
      logBody.style.height = `${logRows.length * rowH}px`;
      // Someone reading further down keeps seeing the same rows while new ones arrive on top.
      if (anchored) logScroll.scrollTop += Math.min(added, LOG_CAP) * rowH;
      $('#log-empty').hidden = logRows.length > 0;
      renderLogWindow();
      renderLogInfo();
    }

    logScroll.addEventListener('scroll', () => requestAnimationFrame(renderLogWindow), { passive: true });
    new ResizeObserver(() => {
      const v = parseFloat(getComputedStyle($('#log')).getPropertyValue('--row-h'));
      if (v > 0 && v !== rowH) { rowH = v; setLogRows(logRows, 0); } else renderLogWindow();
    }).observe(logScroll);

    function onRequest(ev) {
      if (!ev || typeof ev !== 'object') return;
      ring[ringHead] = ev;
      ringHead = (ringHead + 1) % RING_CAP;
      if (ringLen < RING_CAP) ringLen++;
      evCount++;
      if (paused) { pausedNew++; return; }
      if (!matches(ev)) return;
      pending.push(ev);
      if (pending.length > 2 * LOG_CAP) pending = pending.slice(-LOG_CAP);
      scheduleFlush();
    }

    function scheduleFlush() {
      if (flushScheduled) return;
      flushScheduled = true;
      const wait = LOG_MIN_FLUSH_MS - (performance.now() - lastFlush);
      if (wait > 0) setTimeout(() => requestAnimationFrame(flushLog), wait);
      else requestAnimationFrame(flushLog);
    }

    function flushLog() {
      flushScheduled = false;
      lastFlush = performance.now();
      if (!pending.length || paused) { pending = []; return; }
      const take = pending.length > LOG_CAP ? pending.slice(-LOG_CAP) : pending;
      pending = [];
      const rows = take.reverse();
      const keep = Math.max(0, LOG_CAP - rows.length);
      setLogRows(keep ? rows.concat(logRows.slice(0, keep)) : rows, rows.length);
    }

    /** Rebuilds the log from memory (filter change, resume). */
    function rebuildLog() {
      pending = [];
      const rows = [];
      for (let i = 0; i < ringLen && rows.length < LOG_CAP; i++) {
        const ev = ring[(ringHead - 1 - i + RING_CAP) % RING_CAP];
        if (matches(ev)) rows.push(ev);
      }
      setText($('#log-empty'), ringLen ? 'No request matches the filter.' : 'No requests yet.');
      logScroll.scrollTop = 0;
      setLogRows(rows, 0);
    }

    function renderLogInfo() {
      const bits = [`${fmtInt(logRows.length)} in the log`];
      if (evRate > 0) bits.push(`${fmtRate(evRate)} events/s`);
      if (paused) bits.push(`paused · ${fmtInt(pausedNew)} new`);
      const dropped = opts.dropped();
      if (dropped) bits.push(`${fmtInt(dropped)} dropped by the balancer`);
      setText($('#log-info'), bits.join(' · '));
    }

    $('#log-pause').addEventListener('click', () => {
      paused = !paused;
      const b = $('#log-pause');
      b.setAttribute('aria-pressed', String(paused));
      setText(b, paused ? 'Resume' : 'Pause');
      if (!paused) { pausedNew = 0; rebuildLog(); } else renderLogInfo();
    });
    $('#log-backend').addEventListener('change', (e) => { filter.backend = e.target.value; rebuildLog(); });
    $('#log-pool').addEventListener('change', (e) => { filter.pool = e.target.value; rebuildLog(); });
    for (const chip of document.querySelectorAll('#log-status .chip')) {
      chip.addEventListener('click', () => {
        const cls = chip.dataset.class;
        const on = !filter.classes.has(cls);
        if (on) filter.classes.add(cls); else filter.classes.delete(cls);
        chip.setAttribute('aria-pressed', String(on));
        rebuildLog();
      });
    }

    return {
      onRequest,
      rebuild: rebuildLog,
      /** Once a second: the event rate, and the info line. */
      tick(now) {
        evRate = (evCount * 1000) / Math.max(1, now - evCountAt);
        evCount = 0; evCountAt = now;
        renderLogInfo();
      },
    };
  };
})();
