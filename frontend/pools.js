/*
 * lb dashboard: backend cards grouped by pool, and the routes that lead to each, as
 * `window.LB.createPools`. Each pool is a section with its policy (algorithm, hash key,
 * sticky cookie, slow start, health path), how many of its backends are up, and the routes
 * that send requests to it; the routes themselves are listed in match order.
 *
 * Selectors (see also the top of app.js)
 *   #backends [data-pool="NAME"]        one section per pool, in /api/state order; data-removed once a
 *                                       reload removed it
 *     [data-role="pool-name"] [data-role="pool-policy"] [data-role="pool-up"] ("2/3 up")
 *     [data-role="pool-routes"]         "routes: a, b" (+ "unmatched requests" for the default pool)
 *     .cards                            the pool's backend cards
 *   #routes [data-route="NAME"]         the routes in match order, data-pool or data-redirect
 *   #backends[data-layout="single"]     only the pool "default" and no route: no pool headings
 */
'use strict';

(() => {
  const { $, h, setText } = window.LB;
  const DEFAULT_POOL = 'default';

  const span = (ms) => (ms % 1000 === 0 ? `${ms / 1000}s` : `${ms}ms`);

  function policyText(p) {
    const bits = [String(p.algorithm || '')];
    if (p.hash_key) bits.push(`hash ${p.hash_key}`);
    if (p.sticky) bits.push(`sticky cookie ${p.sticky.cookie}${p.sticky.ttl_ms ? ` (${span(p.sticky.ttl_ms)})` : ''}`);
    if (p.slow_start_ms) bits.push(`slow start ${span(p.slow_start_ms)}`);
    if (p.health && p.health.path) bits.push(`health GET ${p.health.path}`);
    return bits.join(' · ');
  }

  function routeText(r) {
    const when = [];
    if (r.host) when.push(`host ${r.host}`);
    if (r.path_prefix) when.push(`path ${r.path_prefix}…`);
    if (r.path) when.push(`path ${r.path}`);
    if (Array.isArray(r.methods)) when.push(r.methods.join('|'));
    if (r.header) when.push(`${r.header.name}: ${r.header.value}`);
    const to = r.redirect != null ? `${r.status} → ${r.redirect}` : `→ pool ${r.pool}`;
    return `${when.length ? when.join(', ') : 'every request'} ${to}${r.strip_prefix ? ' (prefix cut)' : ''}`;
  }

  /** container: the element holding the pool sections (#backends). */
  window.LB.createPools = (container) => {
    const groups = new Map();   // pool name -> {el, r, cards}
    const routeList = $('#routes');
    const poolFilter = $('#log-pool');

    function group(name) {
      let g = groups.get(name);
      if (g) return g;
      const r = {
        name: h('h3', { 'data-role': 'pool-name', class: 'pool-name' }, name),
        policy: h('span', { 'data-role': 'pool-policy', class: 'pool-policy' }),
        up: h('span', { 'data-role': 'pool-up', class: 'pool-up' }),
        routes: h('span', { 'data-role': 'pool-routes', class: 'pool-routes' }),
      };
      const cards = h('div', { class: 'cards' });
      const el = h('section', { class: 'pool-group', 'data-pool': name, 'aria-label': `pool ${name}` },
        h('div', { class: 'pool-head' }, r.name, r.up, r.policy, r.routes), cards);
      container.append(el);
      g = { el, r, cards };
      groups.set(name, g);
      poolFilter.append(h('option', { value: name }, name));
      return g;
    }

    /** Puts a backend card in its pool's section (moving it if the backend changed pool). */
    function place(cardEl, pool) {
      const g = group(pool || DEFAULT_POOL);
      if (cardEl.parentNode !== g.cards) g.cards.append(cardEl);
    }

    /** Takes a state document: pool headings, their order, and the route list. */
    function render(doc) {
      const pools = Array.isArray(doc.pools) ? doc.pools : [];
      const routes = Array.isArray(doc.routes) ? doc.routes : [];
      const single = pools.length <= 1 && routes.length === 0;
      container.dataset.layout = single ? 'single' : 'pools';
      $('#log').dataset.pools = single ? 'single' : 'many';
      $('#log-pool-box').hidden = single;
      const present = new Set();
      for (const p of pools) {
        if (!p || typeof p.name !== 'string') continue;
        present.add(p.name);
        const g = group(p.name);
        delete g.el.dataset.removed;
        container.append(g.el);   // keeps the document's order
        const total = Array.isArray(p.backends) ? p.backends.length : 0;
        setText(g.r.up, `${p.up ?? 0}/${total} up`);
        g.r.up.dataset.allDown = String(total > 0 && !p.up);
        setText(g.r.policy, policyText(p));
        const via = routes.filter((r) => r.pool === p.name).map((r) => r.name);
        if (p.name === DEFAULT_POOL) via.push('unmatched requests');
        setText(g.r.routes, via.length ? `← ${via.join(', ')}` : 'no route leads here');
      }
      for (const [name, g] of groups) if (!present.has(name)) g.el.dataset.removed = 'true';

      routeList.hidden = routes.length === 0;
      const items = routes.map((r, i) => h('li', {
        'data-route': r.name, 'data-pool': r.pool, 'data-redirect': r.redirect, title: `route[${i}]`,
      }, h('span', { class: 'route-name' }, String(r.name)), h('span', { class: 'route-rule' }, routeText(r))));
      const same = routeList.childElementCount === items.length &&
        items.every((li, i) => routeList.children[i].textContent === li.textContent);
      if (!same) routeList.replaceChildren(...items);
    }

    return { place, render };
  };
})();
