/*
 * lb dashboard: the health and config timeline, as `window.LB.createTimeline`: state changes,
 * drains and restarts, newest first, whether an event announced them or a stats document
 * showed them first (then said once, not twice).
 */
'use strict';

(() => {
  const { $, h, fmtClock, num, colorOf } = window.LB;
  const TIMELINE_CAP = 200;

  window.LB.createTimeline = () => {
    const list = $('#timeline');
    const lastEvent = new Map();   // backend -> {state, action, seen}
    const recentEvent = (name, state) => {
      const e = lastEvent.get(name);
      return e && Date.now() - e.seen < 5000 && (e.state === state || e.action === 'enable');
    };

    /** entry: {kind, time_ms, backend?, state?, action?, text?, why?, initial?} */
    function addTimeline(entry) {
      const t = num(entry.time_ms) || Date.now();
      const tag = entry.kind === 'config' || entry.kind === 'process' ? entry.action : entry.state;
      const li = h('li', {
        'data-kind': entry.kind, 'data-backend': entry.backend, 'data-state': entry.state, 'data-action': entry.action,
        'data-time': t, class: entry.initial ? 'initial' : null,
      },
      h('time', { datetime: new Date(t).toISOString(), title: new Date(t).toLocaleString() }, fmtClock(t)),
      h('span', { class: 'what' }, tag ? h('span', { class: 'tag' }, String(tag)) : null, entry.text || entry.backend || ''),
      h('span', { class: 'why' }, entry.why || ''));
      if (entry.backend) li.querySelector('.what').style.setProperty('--c', colorOf(entry.backend));
      // newest first, by time
      let at = list.firstElementChild;
      while (at && Number(at.dataset.time) > t) at = at.nextElementSibling;
      list.insertBefore(li, at);
      $('#timeline-empty').hidden = true;
      while (list.childElementCount > TIMELINE_CAP) list.lastElementChild.remove();
    }

    const CONFIG_WHY = {
      drain: 'drained: no new requests, in-flight ones finish',
      enable: 'enabled: back in rotation',
      add: 'added to the balancer',
      remove: 'removed from the balancer',
    };
    function onConfig(ev) {
      if (!ev || typeof ev.action !== 'string') return;
      if (typeof ev.backend === 'string') {
        const st = { drain: 'draining', remove: 'removed' }[ev.action];
        lastEvent.set(ev.backend, { state: st, action: ev.action, seen: Date.now() });
      }
      addTimeline({ kind: 'config', backend: ev.backend, action: ev.action, time_ms: ev.time_ms, why: CONFIG_WHY[ev.action] || 'operator change' });
    }

    /** A state change seen in a stats document that no health/config event announced. */
    function derivedChange(c, before, b, fromAction) {
      if (recentEvent(c.name, b.state)) return;
      lastEvent.set(c.name, { state: b.state, seen: Date.now() });
      if (fromAction) return; // our own drain/enable: the config event (or toast) tells it
      addTimeline({ kind: 'health', backend: c.name, state: b.state, time_ms: num(b.last_change_ms) || Date.now(),
        why: `${b.last_change_reason || `was ${before}`}` });
    }

    return {
      add: addTimeline,
      onConfig,
      recentEvent,
      derivedChange,
      /** Remembers that an event told `name`'s new state, so a stats document does not repeat it. */
      note(name, what) { lastEvent.set(name, { ...what, seen: Date.now() }); },
    };
  };
})();
