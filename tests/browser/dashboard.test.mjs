// Browser test of the dashboard (frontend/), end to end against the real demo.
//
//   cd tests/browser && npm ci && node --test
//
// Needs: the release binaries (built here with `cargo build --release --bins` unless LB_BIN_DIR
// is set or LB_SKIP_BUILD=1), Debian's Chromium at /usr/bin/chromium (override: CHROMIUM=path;
// `apt-get install -y chromium`), and playwright-core from npm (package.json here), which drives
// that Chromium — no browser is downloaded.
//
// It starts `supervisor` (three backends and lb) on ports 18000-18005 (DASHBOARD_TEST_PORT_BASE
// moves them), opens the dashboard the balancer serves on its admin port, checks the three
// backends are up (two in the pool "default", one in "api", which a route leads to) and grouped
// by pool, sends requests and finds them in the request log with their pool and route, kills
// backend-2 from its
// card and sees it go down, starts it again and sees it come back, and saves a screenshot to
// target/dashboard.png. Whatever it started is stopped at the end, failed or not.
//
// The README's picture (scripts/screenshot.sh): DASHBOARD_SCREENSHOT=PATH saves it there
// instead, and DASHBOARD_SCENE_SECONDS=N (N >= 60) replaces the last step's few seconds of
// traffic with N seconds of it in waves over the three backends, kills backend-2 from its card
// 40 s before the end, and takes the top of the page (header, cards, charts) while it is down.
//
// Selectors are documented at the top of frontend/app.js.

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const BIN_DIR = process.env.LB_BIN_DIR ? path.resolve(process.env.LB_BIN_DIR) : path.join(ROOT, 'target', 'release');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const SCREENSHOT = path.resolve(ROOT, process.env.DASHBOARD_SCREENSHOT || path.join('target', 'dashboard.png'));
const SCENE_SECONDS = Number(process.env.DASHBOARD_SCENE_SECONDS || 0);

const HOST = '127.0.0.1';
const BASE = Number(process.env.DASHBOARD_TEST_PORT_BASE || 18000);
const LISTEN = `${HOST}:${BASE}`;          // the balancer
const BACKEND_BASE_PORT = BASE + 1;        // backend-1..3 on BASE+1..BASE+3
const ADMIN = `${HOST}:${BASE + 4}`;       // admin API + dashboard
const CONTROL = `${HOST}:${BASE + 5}`;     // supervisor API
const HEALTH_INTERVAL_MS = 500;
const NAMES = ['backend-1', 'backend-2', 'backend-3'];

const CHROMIUM_ARGS = [
  '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync',
];

// ------------------------------------------------------------------ cleanup, whatever happens
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'lb-dashboard-test-'));
let supervisor = null;       // ChildProcess (own process group)
let supervisorExit = null;   // {code, signal} once it exited
const knownPids = new Set(); // pids the supervisor reported, killed too at the end
let browser = null;

function killAllSync() {
  if (supervisor && supervisor.pid && !supervisorExit) {
    try { process.kill(-supervisor.pid, 'SIGKILL'); } catch { /* gone */ }
  }
  for (const pid of knownPids) {
    try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
  }
}
process.on('exit', killAllSync);
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => { killAllSync(); process.exit(130); });
}

after(async () => {
  if (browser) await browser.close().catch(() => {});
  if (supervisor && !supervisorExit) {
    // SIGTERM first: the supervisor stops its children itself; then the whole group, hard.
    try { process.kill(-supervisor.pid, 'SIGTERM'); } catch { /* gone */ }
    const deadline = Date.now() + 3000;
    while (!supervisorExit && Date.now() < deadline) await sleep(50);
  }
  killAllSync();
  fs.rmSync(tmp, { recursive: true, force: true });
});

// ------------------------------------------------------------------ helpers
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function eventually(what, fn, timeoutMs, intervalMs = 100) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    if (supervisorExit) throw new Error(`supervisor exited (${JSON.stringify(supervisorExit)}) while waiting for ${what}\n${supervisorLog()}`);
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${last.message}` : ''}`);
    }
    await sleep(intervalMs);
  }
}

async function getJson(url) {
  const res = await fetch(url, { signal: AbortSignal.timeout(2000) });
  if (!res.ok) throw new Error(`${url}: ${res.status}`);
  return res.json();
}

function portIsFree(port) {
  return new Promise((resolve) => {
    const sock = net.connect({ host: HOST, port });
    sock.once('connect', () => { sock.destroy(); resolve(false); });
    sock.once('error', () => resolve(true));
  });
}

function supervisorLog() {
  try {
    const text = fs.readFileSync(path.join(tmp, 'supervisor.log'), 'utf8');
    return `--- supervisor output (last 4000 chars) ---\n${text.slice(-4000)}`;
  } catch {
    return '';
  }
}

// backend-1 and backend-2 are the pool "default"; backend-3 is the pool "api", which the
// route "api" sends /api/ to.
function writeConfig() {
  const table = (name, i, kind) => `[[${kind}]]\nname = "${name}"\naddress = "${HOST}:${BACKEND_BASE_PORT + i}"\n`;
  const backends = `${table(NAMES[0], 0, 'backend')}\n${table(NAMES[1], 1, 'backend')}
[[pool]]
name = "api"
algorithm = "least_connections"
[pool.health]
path = "/health"
${table(NAMES[2], 2, 'pool.backend')}
[[route]]
name = "api"
path_prefix = "/api/"
strip_prefix = true
pool = "api"
`;
  const file = path.join(tmp, 'lb.toml');
  fs.writeFileSync(file, `# written by tests/browser/dashboard.test.mjs
listen = "${LISTEN}"
admin = "${ADMIN}"
algorithm = "round_robin"
log_level = "warn"
access_log = false

[health]
path = "/health"
interval = "${HEALTH_INTERVAL_MS}ms"
timeout = "400ms"
rise = 2
fall = 2

${backends}`);
  return file;
}

function buildBinaries() {
  if (process.env.LB_BIN_DIR || process.env.LB_SKIP_BUILD === '1') return;
  const r = spawnSync('cargo', ['build', '--release', '--bins', '--quiet'], {
    cwd: ROOT, stdio: ['ignore', process.stderr, process.stderr], timeout: 20 * 60 * 1000,
  });
  if (r.error) throw new Error(`cargo build --release --bins: ${r.error.message}`);
  assert.equal(r.status, 0, 'cargo build --release --bins failed');
}

async function sendRequests(marker) {
  const sent = [];
  const get = async (pathAndQuery) => {
    const res = await fetch(`http://${LISTEN}${pathAndQuery}`, { signal: AbortSignal.timeout(5000) });
    await res.arrayBuffer();
    sent.push({ target: pathAndQuery, status: res.status, backend: res.headers.get('x-backend') });
  };
  for (let i = 0; i < 12; i++) await get(`/?dashboard-test=${marker}-${i}`);
  await get(`/status/404?dashboard-test=${marker}-404`);
  return sent;
}

/** Targets of the request-log rows now in the DOM (the log is a virtual list: rows in view). */
const logRows = (page) => page.$$eval('#log-body [role="row"]', (rows) => rows.map((r) => ({
  index: Number(r.dataset.index),
  target: r.querySelector('[data-col="target"]').textContent,
  proto: r.querySelector('[data-col="proto"]').textContent,
  status: r.dataset.status,
  cls: r.dataset.class,
  backend: r.dataset.backend,
})));

const cardState = (page, name) => page.getAttribute(`#backends [data-backend="${name}"]`, 'data-state');

/**
 * The README's moment (DASHBOARD_SCENE_SECONDS): `seconds` of traffic from 6 keep-alive clients in
 * slow waves of about 40-120 requests/s (pages, downloads, answers up to 70 ms slow, a few 404s
 * and POSTs; every fourth request to the pool "api"), backend-2 killed from its card 40 s before the
 * end, and the top of the page (header, backend cards, charts) taken while it is down and
 * backend-1 carries its share.
 */
async function scene(page, seconds) {
  assert.ok(seconds >= 60, 'DASHBOARD_SCENE_SECONDS: at least 60');
  const start = Date.now();
  const end = start + seconds * 1000;
  const killAt = end - 40000;
  const CLIENTS = 6;
  const wave = (ms) => 75 + 30 * Math.sin((2 * Math.PI * ms) / 110000) + 12 * Math.sin((2 * Math.PI * ms) / 23000);
  // The slowest answers drift between 20 and 70 ms over 150 s (the dashboard's p99 is over a minute).
  const slowest = () => 20 + 50 * (0.5 + 0.5 * Math.sin((2 * Math.PI * (Date.now() - start)) / 150000));
  const pick = () => {
    const r = Math.random();
    if (r < 0.45) return '/';
    if (r < 0.65) return `/bytes/${512 << Math.floor(Math.random() * 6)}`;
    if (r < 0.85) return `/delay/${5 + Math.floor(Math.random() * slowest())}`;
    if (r < 0.95) return '/stats';
    if (r < 0.98) return 'POST /echo';
    return '/missing';
  };
  let sent = 0, failed = 0;
  const client = async (c) => {
    for (let i = 0; Date.now() < end; i++) {
      const [method, target] = (() => { const p = pick(); return p.startsWith('POST ') ? ['POST', p.slice(5)] : ['GET', p]; })();
      const url = `http://${LISTEN}${(i + c) % 4 === 0 ? `/api${target}` : target}`;
      try {
        const res = await fetch(url, { method, body: method === 'POST' ? 'hello' : undefined, signal: AbortSignal.timeout(5000) });
        await res.arrayBuffer();
        if (res.status >= 500) failed++;
      } catch {
        failed++;
      }
      sent++;
      const rate = wave(Date.now() - start) * (0.85 + 0.3 * Math.random());
      await sleep(Math.max(0, (CLIENTS * 1000) / rate - 3));
    }
  };
  const clients = Array.from({ length: CLIENTS }, (_, c) => client(c));
  await sleep(killAt - Date.now());
  await page.click('[data-backend="backend-2"] [data-action="kill"]');
  await page.waitForSelector('#backends [data-backend="backend-2"][data-state="down"]', { timeout: 10000 });
  await page.waitForSelector('[data-backend="backend-2"] [data-action="start"]', { state: 'visible', timeout: 6000 });
  await sleep(Math.max(0, end - Date.now() - 1000));
  const bottom = await page.$eval('main > section.charts', (el) => el.getBoundingClientRect().bottom + window.scrollY);
  await page.screenshot({ path: SCREENSHOT, fullPage: true, clip: { x: 0, y: 0, width: 1280, height: Math.ceil(bottom) + 12 } });
  await Promise.all(clients);
  assert.ok(sent > seconds * 30, `scene traffic: ${sent} requests in ${seconds} s`);
  return { sent, failed };
}

// ------------------------------------------------------------------ the test
test('dashboard: live backends, request log, kill and start from the page', { timeout: 25 * 60 * 1000 }, async (t) => {
  let failed = false;
  const step = (name, fn) => t.test(name, { skip: failed && 'an earlier step failed' }, async () => {
    try { await fn(); } catch (e) { failed = true; throw e; }
  });

  let page;
  const pageErrors = [];

  await step('start the demo under the supervisor', async () => {
    assert.ok(fs.existsSync(CHROMIUM), `no Chromium at ${CHROMIUM} (apt-get install -y chromium, or set CHROMIUM)`);
    buildBinaries();
    for (const bin of ['supervisor', 'lb', 'backend']) {
      assert.ok(fs.existsSync(path.join(BIN_DIR, bin)), `missing ${path.join(BIN_DIR, bin)}`);
    }
    for (let p = BASE; p <= BASE + 5; p++) {
      assert.ok(await portIsFree(p), `port ${p} is in use: stop what runs there or set DASHBOARD_TEST_PORT_BASE`);
    }
    const config = writeConfig();
    const log = fs.openSync(path.join(tmp, 'supervisor.log'), 'a');
    supervisor = spawn(path.join(BIN_DIR, 'supervisor'), [
      '--config', config, '--bin-dir', BIN_DIR, '--control', CONTROL,
      '--backends', String(NAMES.length), '--base-port', String(BACKEND_BASE_PORT),
    ], { cwd: ROOT, detached: true, stdio: ['ignore', log, log] });
    fs.closeSync(log);
    supervisor.on('exit', (code, signal) => { supervisorExit = { code, signal }; });
    supervisor.on('error', (e) => { supervisorExit = { error: e.message }; });

    const procs = await eventually('the supervisor to list 3 running backends and lb', async () => {
      const list = await getJson(`http://${CONTROL}/api/processes`);
      for (const p of list) if (Number.isInteger(p.pid)) knownPids.add(p.pid);
      const running = (n) => list.some((p) => p.name === n && p.state === 'running');
      return [...NAMES, 'lb'].every(running) && list;
    }, 30000, 200);
    assert.ok(procs.find((p) => p.name === 'lb').kind === 'balancer');

    await eventually('the admin API to report 3 backends up', async () => {
      const st = await getJson(`http://${ADMIN}/api/state`);
      return st.backends.length === 3 && st.backends.every((b) => b.state === 'up');
    }, 30000, 200);
  });

  await step('open the dashboard served on the admin port', async () => {
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
    page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
    page.on('pageerror', (e) => pageErrors.push(e.message));
    const res = await page.goto(`http://${ADMIN}/?supervisor=${encodeURIComponent(`http://${CONTROL}`)}`);
    assert.equal(res.status(), 200, 'GET / on the admin port');
    await page.waitForSelector('#conn[data-status="live"]', { timeout: 10000 });
    await page.waitForFunction((names) => names.every((n) => {
      const card = document.querySelector(`#backends [data-backend="${n}"]`);
      return card && card.dataset.state === 'up' && card.querySelector('[data-role="state"]').textContent === 'up';
    }), NAMES, { timeout: 15000 });
    assert.equal(await page.locator('#backends [data-backend]').count(), 3, 'one card per backend');
    for (const n of NAMES) {
      const addr = await page.textContent(`[data-backend="${n}"] [data-role="address"]`);
      assert.match(addr, new RegExp(`:${BACKEND_BASE_PORT + NAMES.indexOf(n)}$`), `${n} address`);
    }
    assert.equal((await page.textContent('#t-algorithm')).trim(), 'round_robin');
    assert.equal(await page.isVisible('#status-line'), false, 'no disconnected line while live');
    // Kill/Start appear once the supervisor answered (polled every 2 s).
    await page.waitForSelector('[data-backend="backend-2"] [data-action="kill"]', { state: 'visible', timeout: 8000 });
    assert.equal(await page.isVisible('[data-backend="backend-2"] [data-action="start"]'), false, 'Start hidden while running');
  });

  await step('requests sent to the balancer show in the log', async () => {
    const marker = `m${Date.now().toString(36)}`;
    const sent = await sendRequests(marker);
    assert.deepEqual(sent.map((s) => s.status), [...Array(12).fill(200), 404], 'answers through the balancer');
    // Newest first: the 404 sent last is the first matching row.
    const rows = await eventually('our requests in the request log', async () => {
      const r = (await logRows(page)).filter((x) => x.target.includes(marker));
      return r.length >= 5 && r.some((x) => x.status === '404') && r;
    }, 10000);
    assert.equal(rows[0].status, '404', 'newest first');
    assert.equal(rows[0].cls, '4xx');
    for (const r of rows) assert.ok(NAMES.includes(r.backend), `row served by a backend: ${JSON.stringify(r)}`);
    // The test's requests are HTTP/1.1 (Node's fetch); the column says what each spoke.
    for (const r of rows) assert.equal(r.proto, '1.1', `protocol column: ${JSON.stringify(r)}`);
    assert.equal(await page.getAttribute(`#log-body [role="row"][data-status="404"] .st`, 'class'), 'st s4', '4xx colour');

    // Status-class filter: only 4xx left.
    for (const cls of ['2xx', '3xx', '5xx']) await page.click(`#log-status [data-class="${cls}"]`);
    const only4xx = await logRows(page);
    assert.ok(only4xx.length >= 1 && only4xx.every((r) => r.cls === '4xx'), `4xx filter: ${JSON.stringify(only4xx.slice(0, 5))}`);
    for (const cls of ['2xx', '3xx', '5xx']) await page.click(`#log-status [data-class="${cls}"]`);
    // Backend filter.
    const one = sent.find((s) => s.backend)?.backend || 'backend-1';
    await page.selectOption('#log-backend', one);
    const filtered = await logRows(page);
    assert.ok(filtered.length >= 1 && filtered.every((r) => r.backend === one), `backend filter ${one}`);
    await page.selectOption('#log-backend', '');

    // The header counts them (stats every second).
    await eventually('total requests in the header', async () => {
      const n = Number((await page.textContent('#t-requests')).replace(/[^0-9]/g, ''));
      return n >= sent.length;
    }, 5000);
  });

  await step('backends are grouped by pool, and the log shows pool and route', async () => {
    await page.waitForSelector('#backends[data-layout="pools"]', { timeout: 5000 });
    const inPool = (pool) => page.$$eval(`#backends [data-pool="${pool}"] [data-backend]`, (cs) => cs.map((c) => c.dataset.backend));
    assert.deepEqual(await inPool('default'), ['backend-1', 'backend-2']);
    assert.deepEqual(await inPool('api'), ['backend-3']);
    assert.equal((await page.textContent('[data-pool="api"] [data-role="pool-up"]')).trim(), '1/1 up');
    assert.match(await page.textContent('[data-pool="api"] [data-role="pool-policy"]'), /least_connections/);
    assert.match(await page.textContent('[data-pool="api"] [data-role="pool-routes"]'), /api/);
    assert.match(await page.textContent('[data-pool="default"] [data-role="pool-routes"]'), /unmatched/);
    assert.match(await page.textContent('#routes [data-route="api"]'), /\/api\/.*pool api/);

    const marker = `p${Date.now().toString(36)}`;
    for (let i = 0; i < 3; i++) {
      const res = await fetch(`http://${LISTEN}/api/x?dashboard-test=${marker}-${i}`, { signal: AbortSignal.timeout(5000) });
      await res.arrayBuffer();
      assert.equal(res.headers.get('x-backend'), 'backend-3', 'routed to the pool api');
    }
    const cells = (sel) => page.$$eval(`#log-body [role="row"]`, (rows, m) => rows
      .filter((r) => r.querySelector('[data-col="target"]').textContent.includes(m))
      .map((r) => ({ pool: r.querySelector('[data-col="pool"]').textContent, route: r.querySelector('[data-col="route"]').textContent })), sel);
    const rows = await eventually('the /api/ requests in the log', async () => {
      const r = await cells(marker);
      return r.length === 3 && r;
    }, 10000);
    for (const r of rows) assert.deepEqual(r, { pool: 'api', route: 'api' });
    assert.equal(await page.isVisible('#log [data-col="pool"]'), true, 'pool column shown with several pools');
    await page.selectOption('#log-pool', 'api');
    const only = await page.$$eval('#log-body [role="row"]', (rs) => rs.map((r) => r.dataset.pool));
    assert.ok(only.length >= 3 && only.every((p) => p === 'api'), `pool filter: ${only}`);
    await page.selectOption('#log-pool', '');
  });

  await step('Kill on backend-2 takes it down', async () => {
    const t0 = Date.now();
    await page.click('[data-backend="backend-2"] [data-action="kill"]');
    await page.waitForSelector('#backends [data-backend="backend-2"][data-state="down"]', { timeout: 10000 });
    const took = Date.now() - t0;
    // fall = 2 probes every 500 ms, plus up to a second until the next stats event, plus slack.
    assert.ok(took < 2 * HEALTH_INTERVAL_MS + 4000, `down after ${took} ms`);
    assert.equal(await page.textContent('[data-backend="backend-2"] [data-role="state"]'), 'down');
    for (const n of ['backend-1', 'backend-3']) assert.equal(await cardState(page, n), 'up', `${n} stays up`);
    await page.waitForSelector('#timeline li[data-kind="health"][data-backend="backend-2"][data-state="down"]:not(.initial)', { timeout: 5000 });
    // The supervisor reports the process stopped: Start replaces Kill.
    await page.waitForSelector('[data-backend="backend-2"] [data-action="start"]', { state: 'visible', timeout: 6000 });
    assert.equal(await page.isVisible('[data-backend="backend-2"] [data-action="kill"]'), false);
    const list = await getJson(`http://${CONTROL}/api/processes`);
    assert.equal(list.find((p) => p.name === 'backend-2').state, 'stopped');
    // Traffic still flows, through the other two.
    const res = await fetch(`http://${LISTEN}/`, { signal: AbortSignal.timeout(5000) });
    await res.arrayBuffer();
    assert.equal(res.status, 200);
  });

  await step('Start brings backend-2 back up', async () => {
    await page.click('[data-backend="backend-2"] [data-action="start"]');
    await page.waitForSelector('#backends [data-backend="backend-2"][data-state="up"]', { timeout: 15000 });
    await page.waitForSelector('#timeline li[data-kind="health"][data-backend="backend-2"][data-state="up"]:not(.initial)', { timeout: 5000 });
    await page.waitForSelector('[data-backend="backend-2"] [data-action="kill"]', { state: 'visible', timeout: 6000 });
    const list = await getJson(`http://${CONTROL}/api/processes`);
    for (const p of list) if (Number.isInteger(p.pid)) knownPids.add(p.pid);
    assert.equal(list.find((p) => p.name === 'backend-2').state, 'running');
  });

  await step('screenshot', async () => {
    fs.mkdirSync(path.dirname(SCREENSHOT), { recursive: true });
    if (SCENE_SECONDS > 0) {
      const { sent, failed } = await scene(page, SCENE_SECONDS);
      t.diagnostic(`scene: ${sent} requests, ${failed} failed (5xx or no answer)`);
    } else {
      // Some traffic (about 40 requests/s for 4 s) so the charts and the log have something to show.
      const until = Date.now() + 4000;
      const traffic = (async () => {
        for (let i = 0; Date.now() < until; i++) {
          const res = await fetch(`http://${LISTEN}${i % 3 ? '/' : '/api/'}?screenshot=${i}`, { signal: AbortSignal.timeout(5000) });
          await res.arrayBuffer();
          await sleep(25);
        }
      })();
      await sleep(3500);
      await page.screenshot({ path: SCREENSHOT, fullPage: true });
      await traffic;
    }
    t.diagnostic(`screenshot: ${SCREENSHOT}`);
    assert.deepEqual(pageErrors, [], 'no uncaught errors in the page');
  });

  if (failed) {
    if (page) {
      const shot = path.join(ROOT, 'target', 'dashboard-failure.png');
      fs.mkdirSync(path.dirname(shot), { recursive: true });
      await page.screenshot({ path: shot, fullPage: true }).catch(() => {});
      t.diagnostic(`failure screenshot: ${shot}`);
    }
    t.diagnostic(supervisorLog());
  }
});
