/*
 * lb dashboard: the helpers every part of the page uses (DOM building, number and time
 * formats, the API call with its timeout, toasts, the canvas colours), as `window.LB`.
 * A classic script, loaded before charts.js and app.js, so the page works from file://.
 */
'use strict';

(() => {
  const WINDOW_MS = 5 * 60 * 1000;   // charts: last 5 minutes
  const PALETTE = ['#3b82f6', '#a855f7', '#06b6d4', '#ec4899', '#f97316', '#84cc16', '#6366f1', '#14b8a6', '#eab308', '#64748b'];

  const $ = (sel) => document.querySelector(sel);

  /** Creates an element. Strings among children become text nodes; attrs never take HTML. */
  function h(tag, attrs, ...children) {
    const e = document.createElement(tag);
    if (attrs) {
      for (const [k, v] of Object.entries(attrs)) {
        if (v == null || v === false) continue;
        if (k === 'class') e.className = v;
        else if (k === 'text') e.textContent = v;
        else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
        else e.setAttribute(k, v === true ? '' : String(v));
      }
    }
    for (const c of children) if (c != null) e.append(c);
    return e;
  }
  const setText = (e, s) => { s = s == null ? '' : String(s); if (e.textContent !== s) e.textContent = s; };

  const nf0 = new Intl.NumberFormat('en-US', { maximumFractionDigits: 0 });
  const fmtInt = (n) => (n == null || !isFinite(n) ? '—' : nf0.format(n));
  function fmtRate(r) {
    if (r == null || !isFinite(r)) return '—';
    if (r === 0) return '0';
    if (r < 10) return r.toFixed(1);
    if (r < 10000) return nf0.format(Math.round(r));
    return (r / 1000).toFixed(1) + 'k';
  }
  function fmtMs(ms) {
    if (ms == null || !isFinite(ms)) return '—';
    if (ms < 1) return ms.toFixed(2) + ' ms';
    if (ms < 10) return ms.toFixed(1) + ' ms';
    if (ms < 1000) return Math.round(ms) + ' ms';
    return (ms / 1000).toFixed(ms < 10000 ? 2 : 1) + ' s';
  }
  function fmtBytes(b) {
    if (b == null || !isFinite(b)) return '—';
    if (b < 1000) return b + ' B';
    if (b < 1e6) return (b / 1e3).toFixed(1) + ' kB';
    if (b < 1e9) return (b / 1e6).toFixed(1) + ' MB';
    return (b / 1e9).toFixed(1) + ' GB';
  }
  function fmtDuration(ms) {
    if (ms == null || !isFinite(ms) || ms < 0) return '—';
    const s = Math.floor(ms / 1000), m = Math.floor(s / 60), hh = Math.floor(m / 60), d = Math.floor(hh / 24);
    if (d > 0) return `${d}d ${hh % 24}h`;
    if (hh > 0) return `${hh}h ${String(m % 60).padStart(2, '0')}m`;
    if (m > 0) return `${m}m ${String(s % 60).padStart(2, '0')}s`;
    return `${s}s`;
  }
  function fmtAgo(ms) {
    if (ms == null) return '';
    const d = Date.now() - ms;
    if (d < 1000) return 'just now';
    return fmtDuration(d) + ' ago';
  }
  const pad2 = (n) => String(n).padStart(2, '0');
  function fmtClock(ms, withMs) {
    const d = new Date(ms);
    const s = `${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}`;
    return withMs ? `${s}.${String(d.getMilliseconds()).padStart(3, '0')}` : s;
  }
  const num = (v) => (typeof v === 'number' && isFinite(v) ? v : null);
  const statusClass = (s) => (s >= 200 && s < 600 ? `${Math.floor(s / 100)}xx` : 'other');

  function toast(msg, kind) {
    const t = h('div', { class: `toast ${kind || ''}`, role: kind === 'error' ? 'alert' : 'status' }, msg);
    $('#toasts').append(t);
    setTimeout(() => t.remove(), kind === 'error' ? 7000 : 3500);
    while ($('#toasts').childElementCount > 4) $('#toasts').firstElementChild.remove();
  }

  async function request(url, opts = {}, timeoutMs = 4000) {
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), timeoutMs);
    try {
      const res = await fetch(url, { cache: 'no-store', ...opts, signal: ctl.signal });
      const text = await res.text();
      let body = null;
      try { body = text ? JSON.parse(text) : null; } catch { body = null; }
      if (!res.ok) {
        const why = body && typeof body.error === 'string' ? body.error : text.slice(0, 200) || res.statusText;
        const err = new Error(`${res.status}: ${why}`);
        err.status = res.status;
        throw err;
      }
      return body;
    } catch (e) {
      if (e.name === 'AbortError') throw new Error('timed out');
      throw e;
    } finally {
      clearTimeout(timer);
    }
  }

  // ------------------------------------------------------------------ theme (canvas colours)
  const theme = {};
  function readTheme() {
    const cs = getComputedStyle(document.documentElement);
    const v = (n) => cs.getPropertyValue(n).trim();
    Object.assign(theme, {
      text: v('--text'), muted: v('--muted'), faint: v('--faint'), grid: v('--grid'), border: v('--border'),
      panel: v('--panel'), panel2: v('--panel-2'), up: v('--up'), down: v('--down'), draining: v('--draining'),
      removed: v('--removed'), accent: v('--accent'), sans: v('--sans'), mono: v('--mono'),
    });
  }
  readTheme();

  const colors = new Map();
  function colorOf(name) {
    if (!colors.has(name)) colors.set(name, PALETTE[colors.size % PALETTE.length]);
    return colors.get(name);
  }


  window.LB = {
    WINDOW_MS, $, h, setText, fmtInt, fmtRate, fmtMs, fmtBytes, fmtDuration, fmtAgo, pad2, fmtClock,
    num, statusClass, toast, request, theme, readTheme, colorOf,
  };
})();
