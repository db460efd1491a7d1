/*
 * lb dashboard: the canvas charts, as `window.LB.charts`. TimeChart draws series over the last
 * WINDOW_MS (requests per second, latency); StateStrip draws one band per backend coloured by
 * its state. Both take their data from callbacks (`samples()`, `series()`, `names()`), so they
 * hold no state of the page's own.
 */
'use strict';

(() => {
  const { WINDOW_MS, pad2, fmtClock, theme } = window.LB;

  function niceStep(range, target) {
    const raw = range / Math.max(1, target);
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const n = raw / mag;
    return (n <= 1 ? 1 : n <= 2 ? 2 : n <= 2.5 ? 2.5 : n <= 5 ? 5 : 10) * mag;
  }

  /** A time-series line chart over the last WINDOW_MS, drawn on a canvas. */
  class TimeChart {
    constructor(canvas, opts) {
      this.canvas = canvas;
      this.ctx = canvas.getContext('2d');
      this.opts = opts;       // {series(): [...], samples(), ready(), unit, fmtY, tooltip(sample)}
      this.hidden = new Set();
      this.hoverX = null;
      this.w = 0; this.h = 0; this.dpr = 1;
      new ResizeObserver(() => this.resize()).observe(canvas.parentElement);
      canvas.addEventListener('pointermove', (e) => { this.hoverX = e.offsetX; this.draw(); });
      canvas.addEventListener('pointerleave', () => { this.hoverX = null; this.draw(); });
      this.resize();
    }
    resize() {
      const dpr = window.devicePixelRatio || 1;
      const rect = this.canvas.getBoundingClientRect();
      const W = Math.max(1, Math.round(rect.width * dpr)), H = Math.max(1, Math.round(rect.height * dpr));
      if (this.canvas.width !== W || this.canvas.height !== H) { this.canvas.width = W; this.canvas.height = H; }
      this.w = rect.width; this.h = rect.height; this.dpr = dpr;
      this.draw();
    }
    frame() {
      const { ctx } = this;
      ctx.setTransform(this.dpr, 0, 0, this.dpr, 0, 0);
      ctx.clearRect(0, 0, this.w, this.h);
      ctx.font = `11px ${theme.sans}`;
      ctx.textBaseline = 'middle';
    }
    /** Draws the time axis (and vertical grid) for the plot box; returns x(t). */
    timeAxis(L, R, T, B) {
      const { ctx } = this;
      const now = Date.now(), t0 = now - WINDOW_MS;
      const x = (t) => L + ((t - t0) / WINDOW_MS) * (R - L);
      const pxPerMin = (R - L) / 5;
      const step = pxPerMin > 150 ? 30000 : pxPerMin > 60 ? 60000 : 120000;
      ctx.fillStyle = theme.muted;
      ctx.textAlign = 'center';
      ctx.strokeStyle = theme.grid;
      ctx.lineWidth = 1;
      for (let t = Math.ceil(t0 / step) * step; t <= now; t += step) {
        const xx = Math.round(x(t)) + 0.5;
        ctx.beginPath(); ctx.moveTo(xx, T); ctx.lineTo(xx, B); ctx.stroke();
        const d = new Date(t);
        const label = step < 60000 || d.getSeconds() ? fmtClock(t) : `${pad2(d.getHours())}:${pad2(d.getMinutes())}`;
        if (xx > L + 18 && xx < R - 18) ctx.fillText(label, xx, B + 11);
      }
      return { x, t0, now };
    }
    draw() {
      if (!this.w || !this.h) return;
      this.frame();
      const { ctx } = this;
      const series = this.opts.series().filter((s) => !this.hidden.has(s.key));
      const L = 46, R = this.w - 10, T = 22, B = this.h - 20;
      if (R - L < 40 || B - T < 30) return;
      const visible = this.opts.samples().filter((s) => s.t >= Date.now() - WINDOW_MS - 2000);

      let max = 0, min = Infinity;
      for (const s of visible) {
        if (s.gap) continue;
        for (const se of series) {
          const v = se.value(s);
          if (v == null) continue;
          if (v > max) max = v;
          if (v > 0 && v < min) min = v;
        }
      }
      let y, ticks;
      if (this.opts.log) {
        // log scale: p50 and p99 both readable however far apart they are
        const lo = Math.pow(10, Math.floor(Math.log10(isFinite(min) ? min : 0.1)));
        const hi = Math.max(lo * 10, Math.pow(10, Math.ceil(Math.log10(max > 0 ? max * 1.05 : 1))));
        const l0 = Math.log10(lo), l1 = Math.log10(hi);
        y = (v) => B - ((Math.log10(Math.max(v, lo)) - l0) / (l1 - l0)) * (B - T);
        const decades = l1 - l0;
        const mult = decades <= 2 ? [1, 2, 5] : decades <= 4 ? [1, 3] : [1];
        ticks = [];
        for (let d = lo; d <= hi * 1.0001; d *= 10) for (const m of mult) if (d * m <= hi * 1.0001) ticks.push(d * m);
      } else {
        const step = niceStep(max > 0 ? max * 1.1 : (this.opts.minMax || 1), 4);
        const top = Math.max(step, Math.ceil((max * 1.05) / step) * step);
        y = (v) => B - (v / top) * (B - T);
        ticks = [];
        for (let v = 0; v <= top + step / 1000; v += step) ticks.push(v);
      }

      // horizontal grid + y labels
      ctx.strokeStyle = theme.grid; ctx.lineWidth = 1; ctx.fillStyle = theme.muted; ctx.textAlign = 'right';
      for (const v of ticks) {
        const yy = Math.round(y(v)) + 0.5;
        ctx.beginPath(); ctx.moveTo(L, yy); ctx.lineTo(R, yy); ctx.stroke();
        ctx.fillText(this.opts.fmtY(v), L - 6, yy);
      }
      const { x } = this.timeAxis(L, R, T, B);
      ctx.textAlign = 'left'; ctx.fillStyle = theme.muted;
      ctx.fillText(this.opts.unit, 4, 8);
      ctx.strokeStyle = theme.border;
      ctx.beginPath(); ctx.moveTo(L, B + 0.5); ctx.lineTo(R, B + 0.5); ctx.stroke();

      if (!visible.some((s) => !s.gap)) {
        ctx.textAlign = 'center'; ctx.fillStyle = theme.faint; ctx.font = `12px ${theme.sans}`;
        ctx.fillText(this.opts.ready() ? 'collecting data…' : 'waiting for the balancer…', (L + R) / 2, (T + B) / 2);
        return;
      }

      ctx.save();
      ctx.beginPath(); ctx.rect(L, T - 2, R - L, B - T + 2); ctx.clip();
      ctx.lineJoin = 'round'; ctx.lineCap = 'round';
      for (const se of series) {
        const runs = [];
        let run = [];
        for (const s of visible) {
          const v = s.gap ? null : se.value(s);
          if (v == null) { if (run.length) runs.push(run); run = []; continue; }
          run.push([x(s.t), y(v)]);
        }
        if (run.length) runs.push(run);
        if (se.fill) {
          ctx.fillStyle = se.fill;
          for (const r of runs) {
            if (r.length < 2) continue;
            ctx.beginPath(); ctx.moveTo(r[0][0], B);
            for (const [px, py] of r) ctx.lineTo(px, py);
            ctx.lineTo(r[r.length - 1][0], B); ctx.closePath(); ctx.fill();
          }
        }
        ctx.strokeStyle = se.color; ctx.lineWidth = se.width || 1.5; ctx.setLineDash(se.dash || []);
        for (const r of runs) {
          if (r.length === 1) { ctx.fillStyle = se.color; ctx.fillRect(r[0][0] - 1, r[0][1] - 1, 2, 2); continue; }
          ctx.beginPath(); ctx.moveTo(r[0][0], r[0][1]);
          for (let i = 1; i < r.length; i++) ctx.lineTo(r[i][0], r[i][1]);
          ctx.stroke();
        }
      }
      ctx.setLineDash([]);
      ctx.restore();

      if (this.hoverX != null && this.hoverX >= L && this.hoverX <= R) this.drawHover(visible, x, L, R, T, B);
    }
    drawHover(visible, x, L, R, T, B) {
      const { ctx } = this;
      let best = null, bd = Infinity;
      for (const s of visible) { if (s.gap) continue; const d = Math.abs(x(s.t) - this.hoverX); if (d < bd) { bd = d; best = s; } }
      if (!best || bd > 30) return;
      const xx = Math.round(x(best.t)) + 0.5;
      ctx.strokeStyle = theme.faint; ctx.lineWidth = 1;
      ctx.beginPath(); ctx.moveTo(xx, T); ctx.lineTo(xx, B); ctx.stroke();
      const rows = this.opts.tooltip(best).filter((r) => !this.hidden.has(r.key));
      ctx.font = `11.5px ${theme.sans}`;
      const head = fmtClock(best.t);
      let w = ctx.measureText(head).width;
      for (const r of rows) w = Math.max(w, ctx.measureText(`${r.label}  ${r.value}`).width + 16);
      const bw = w + 16, bh = 20 + rows.length * 16;
      let bx = xx + 10; if (bx + bw > R) bx = xx - 10 - bw;
      const by = T + 4;
      ctx.fillStyle = theme.panel; ctx.strokeStyle = theme.border;
      ctx.beginPath(); ctx.rect(bx, by, bw, bh); ctx.fill(); ctx.stroke();
      ctx.textAlign = 'left'; ctx.fillStyle = theme.muted;
      ctx.fillText(head, bx + 8, by + 11);
      rows.forEach((r, i) => {
        const yy = by + 27 + i * 16;
        ctx.fillStyle = r.color; ctx.fillRect(bx + 8, yy - 4, 8, 8);
        ctx.fillStyle = theme.text; ctx.fillText(r.label, bx + 22, yy);
        ctx.textAlign = 'right'; ctx.fillText(r.value, bx + bw - 8, yy); ctx.textAlign = 'left';
      });
    }
  }

  /** Backend state over the last WINDOW_MS: one coloured band per backend. */
  class StateStrip extends TimeChart {
    draw() {
      const box = this.canvas.parentElement;
      const names = this.opts.names();
      if (box.hidden !== (names.length === 0)) box.hidden = names.length === 0;
      if (box.hidden || !this.w || !this.h) return;
      const want = Math.max(1, names.length) * 18 + 26;
      if (Math.abs(this.canvas.parentElement.clientHeight - want) > 1) { this.canvas.parentElement.style.height = `${want}px`; return; }
      this.frame();
      const { ctx } = this;
      const L = 84, R = this.w - 10, T = 4, B = this.h - 20;
      const { x, t0 } = this.timeAxis(L, R, T, B);
      const visible = this.opts.samples().filter((s) => s.t >= t0 - 2000);
      const stateColor = { up: theme.up, down: theme.down, draining: theme.draining, removed: theme.removed };
      names.forEach((n, i) => {
        const y0 = T + i * 18 + 3, hh = 12;
        ctx.fillStyle = theme.text; ctx.textAlign = 'right';
        ctx.fillText(n.length > 12 ? `${n.slice(0, 11)}…` : n, L - 8, y0 + hh / 2);
        ctx.fillStyle = theme.grid; ctx.fillRect(L, y0, R - L, hh);
        for (let k = 1; k < visible.length; k++) {
          const a = visible[k - 1], b = visible[k];
          if (a.gap || b.gap || !b.per[n]) continue;
          const xa = Math.max(L, x(a.t)), xb = Math.min(R, x(b.t));
          if (xb <= xa) continue;
          ctx.fillStyle = stateColor[b.per[n].state] || theme.removed;
          ctx.fillRect(xa, y0, xb - xa + 0.6, hh);
        }
      });
      if (this.hoverX != null && this.hoverX >= L && this.hoverX <= R) {
        const t = t0 + ((this.hoverX - L) / (R - L)) * WINDOW_MS;
        ctx.strokeStyle = theme.faint; ctx.beginPath(); ctx.moveTo(this.hoverX + 0.5, T); ctx.lineTo(this.hoverX + 0.5, B); ctx.stroke();
        ctx.fillStyle = theme.muted; ctx.textAlign = this.hoverX > R - 60 ? 'right' : 'left';
        ctx.fillText(fmtClock(t), this.hoverX + (this.hoverX > R - 60 ? -4 : 4), B + 11);
      }
    }
  }

  window.LB.charts = { TimeChart, StateStrip };
})();
