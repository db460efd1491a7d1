#!/usr/bin/env bash
# Side-by-side benchmark of lb against nginx and HAProxy (issue #6); results in docs/BENCHMARKS.md.
#
# One common backend for everyone: nginx, one worker, `return 200` of a small body (and a 1 MiB
# file) on three loopback ports, keep-alive without limit, no access log. Contestants, each on the
# same port and balancing the same three backends round-robin:
#   direct     wrk straight to one backend port: the ceiling
#   relay      a plain TCP relay (src/bin/relay.rs): a backend connection per client, bytes
#              copied without a look, the same system calls per keep-alive request as an HTTP
#              proxy and next to no user-space work: the floor of proxy CPU per request
#   lb         workers = 1, access_log = false
#   nginx      worker_processes 1, upstream keepalive, access_log off
#   haproxy    nbthread 1, http-reuse always, no log
#   lb-2 nginx-2 haproxy-2    the same at 2 workers / 2 threads
#   lb-routes  lb with 20 [[route]] rules (by host, path prefix and header) to a second pool,
#              none matching the benchmark's requests: every rule is tried before the default
#              pool takes them, routing's worst case (issue #12); ka64 and instr only
#   lb-log     lb with its access log on (text, the default) into a file, and lb-json the same in
#              JSON (issue #14: each within 5 % of lb without); nginx-log: nginx with a buffered
#              access log (buffer=64k flush=100ms, the same as lb's) into a file, with a format
#              holding what lb's text line holds; ka64 (and instr, but for nginx-log). The files are emptied
#              after every run.
#   lb-defer haproxy-defer  lb with tcp_defer_accept = true and HAProxy with defer-accept on its
#              bind line (TCP_DEFER_ACCEPT: a connection is accepted once its request is in);
#              close and sysclose only
#   lb-nospin  lb with idle_spin = "0s": a reactor that sleeps as soon as it runs out of work, as
#              lb did before idle_spin (on by default since the seventh session of issue #14);
#              ka64, close, rate, sysclose and the TLS scenarios
#   lb-before  the lb binary BENCH_BEFORE_BIN (an earlier build, e.g. from a worktree of an older
#              commit) on lb's configuration, to compare a change against the same machine in
#              the same minute; ka64, instr, close and sysclose, and only when BENCH_BEFORE_BIN
#              is set
# Scenarios (each run on a freshly started contestant, after a warm-up):
#   ka64 ka256   keep-alive GETs from 64 / 256 connections (wrk, closed loop)
#   close        a new connection per request, 64 at a time (wrk -H 'Connection: close')
#   big          1 MiB responses over 16 keep-alive connections (throughput)
#   rate         a fixed rate below saturation, open loop (loadgen --rate): p50 / p99 / p99.9
#   idle         RSS fresh, and with 10,000 idle keep-alive connections (idleconns)
#   sys          64 keep-alive connections again, the proxy's system calls (all, epoll_wait,
#                epoll_ctl, accept4) and context switches counted by perf (skipped without perf)
#   sysclose     the same with a new connection per request
#   instr        user-space instructions per request under callgrind (skipped without valgrind)
# TLS scenarios (opt-in through BENCH_SCENARIOS): lb, nginx and HAProxy terminate TLS on their own
# port (BENCH_TLS_PORT) with the same certificate (scripts/certs.sh: ECDSA P-256 and RSA 2048,
# BENCH_TLS_CERTS picks), each with its own default ciphers, and forward plain HTTP to the same
# backends; every TLS scenario runs once per certificate (tlsnew-ecdsa, tlsnew-rsa, ...):
#   tlsnew       a full handshake per request: openssl s_time -new, BENCH_TLS_CLIENTS at a time;
#                full handshakes/s and proxy CPU per handshake (its request and answer included)
#   tlsresume    a resumed handshake per request: openssl s_time -reuse, the same way
#   tlska64      keep-alive GETs over TLS from 64 connections (wrk https://)
#   tlsbig       1 MiB responses over TLS, 16 keep-alive connections (wrk https://)
#   h2tls        HTTP/2 over TLS (ALPN h2): h2load, 64 connections with 10 streams each in flight
#                (issue #13); every contestant offers h2 and http/1.1 by ALPN and forwards
#                HTTP/1.1 to the backends
# Direct and relay have no TLS and sit these out, as lb does while its config check refuses [tls].
# Besides req/s and latency, every run records the proxy's CPU time (utime and stime of its
# processes, /proc/PID/stat) per request, the backend connections it opened (stub_status
# "accepts" of the backend) and still holds (ss), its RSS (VmRSS of its processes, the peak of
# samples every 0.25 s), how long its threads and the backend's waited for a CPU
# (/proc/PID/task/*/schedstat: the other work on the machine), and errors (socket errors,
# non-2xx answers, connections lost), and with a new connection per request the TCP segments
# sent per request on the whole host (/proc/net/snmp OutSegs: both ends of the client's and
# the backend's connections). Rounds are interleaved per scenario: for each scenario,
# round 1 runs every contestant, then round 2 ..., so machine drift hits everyone alike; each
# figure is the median over the rounds with min-max. The final table gives every median's ratio
# to HAProxy's at the same worker count (direct is compared with 1-thread HAProxy), then checks
# the issue's targets for lb.
#
# CPU placement (2 CPUs assumed, see BENCH_CLIENT_CPU / BENCH_PROXY_CPU): the load generator,
# the backend and this script share CPU 0; a 1-worker proxy has CPU 1 to itself. The direct row
# then is a true ceiling: client and backend do the same work per request in every row, on the
# same CPU. The 2-worker proxies may use both CPUs (and so compete with client and backend).
#
#   ./scripts/bench.sh                 full run: 5 rounds (3 for idle, 1 for sys*), ~15 minutes
#   BENCH_QUICK=1 ./scripts/bench.sh   1 round of short runs, for development
#
# Settings (environment): BENCH_ROUNDS, BENCH_IDLE_ROUNDS, BENCH_SYS_ROUNDS, BENCH_DURATION
# (s per measured closed-loop run), BENCH_RATE_DURATION, BENCH_WARMUP (s, whole), BENCH_RATE
# (req/s of the fixed-rate scenario),
# BENCH_IDLE_CONNS, BENCH_CONTESTANTS, BENCH_SCENARIOS (subsets, in the order given),
# BENCH_PORT (contestants; lb's admin API on the next port), BENCH_BACKEND_PORT (three backends
# from there; the backend's stub_status one below), BENCH_CLIENT_CPU, BENCH_PROXY_CPU,
# BENCH_OUT (where results.tsv, report.md and every raw output are kept; default target/bench),
# BENCH_REPORT_FROM (a BENCH_OUT of an earlier run: print its report again and exit),
# BENCH_RATE_SPIN=1 (during the fixed-rate runs, a nice-19 busy loop on the proxy's CPU keeps that
# vCPU from idling, whose wake-up latency on a shared VM host otherwise decides p99),
# BENCH_BUSY_POLL=1 (lb with busy_poll = true and HAProxy with busy-polling: pollers that never
# sleep; nginx has no such setting),
# BENCH_NICE (e.g. -10: run everything at that niceness, so that other work on a shared machine
# disturbs the figures less, and is slowed down more; needs root; default: unchanged),
# BENCH_TLS_PORT (the contestants' TLS listener, default BENCH_PORT + 3, clear of the demo's 8443), BENCH_TLS_CERTS ("ecdsa rsa", or
# one of them), BENCH_TLS_CLIENTS (s_time processes at once in tlsnew and tlsresume, default 4),
# BENCH_CERTS (the certificates' directory, default certs/, made or renewed by scripts/certs.sh).
#
#   BENCH_SCENARIOS="tlsnew tlsresume tlska64 tlsbig" BENCH_CONTESTANTS="lb nginx haproxy" ./scripts/bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/sbin:/sbin"

quick=${BENCH_QUICK:-0}
if [ "$quick" = 1 ]; then
    rounds=${BENCH_ROUNDS:-1}; duration=${BENCH_DURATION:-2}; rate_duration=${BENCH_RATE_DURATION:-3}
else
    rounds=${BENCH_ROUNDS:-5}; duration=${BENCH_DURATION:-3}; rate_duration=${BENCH_RATE_DURATION:-3}
fi
warmup=${BENCH_WARMUP:-1}
rate=${BENCH_RATE:-5000}
rate_spin=${BENCH_RATE_SPIN:-0}
busy_poll=${BENCH_BUSY_POLL:-0}
idle_conns=${BENCH_IDLE_CONNS:-10000}
read -r -a contestants <<<"${BENCH_CONTESTANTS:-direct relay lb lb-nospin lb-routes nginx haproxy lb-2 nginx-2 haproxy-2}"
read -r -a scenarios <<<"${BENCH_SCENARIOS:-ka64 ka256 close big rate idle sys sysclose instr}"
port=${BENCH_PORT:-8120}
admin_port=$((port + 1))
b1=${BENCH_BACKEND_PORT:-9121}
b2=$((b1 + 1))
b3=$((b1 + 2))
status_port=$((b1 - 1))
client_cpu=${BENCH_CLIENT_CPU:-0}
proxy_cpu=${BENCH_PROXY_CPU:-1}
out=${BENCH_OUT:-target/bench}
tls_port=${BENCH_TLS_PORT:-$((port + 3))}
read -r -a tls_certs <<<"${BENCH_TLS_CERTS:-ecdsa rsa}"
tls_clients=${BENCH_TLS_CLIENTS:-4}
certs=${BENCH_CERTS:-certs}
tls=0 # a TLS scenario is among those to run
lb_tls=1 # lb's config check takes [tls]
for s in "${scenarios[@]}"; do
    case $s in tls* | h2tls) tls=1 ;; esac
done
for k in "${tls_certs[@]}"; do
    case $k in
        ecdsa | rsa) ;;
        *) echo "BENCH_TLS_CERTS holds ecdsa and/or rsa, not $k" >&2; exit 2 ;;
    esac
done

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

# --- report -------------------------------------------------------------------------------------
# The table, from results.tsv (scenario, contestant, round, figure, value per line).
report() {
    awk -F'\t' -v contestants="${contestants[*]}" -v rate="$rate" -v idle="$idle_conns" \
        -v rounds="$rounds" '
    function fmt(v,   a) {
        a = v < 0 ? -v : v
        if (a >= 10000) return sprintf("%.1fk", v / 1000)
        if (a >= 100) return sprintf("%.0f", v)
        if (a >= 10) return sprintf("%.1f", v)
        if (a >= 1) return sprintf("%.2f", v)
        if (a == 0) return "0"
        return sprintf("%.3f", v)
    }
    # median, min and max of the values of key k (contestant SUBSEP figure)
    function stats(k,   n, i, j, t, x) {
        n = cnt[k]
        if (n == 0) return 0
        for (i = 1; i <= n; i++) x[i] = val[k, i]
        for (i = 2; i <= n; i++) { t = x[i]; for (j = i - 1; j >= 1 && x[j] > t; j--) x[j + 1] = x[j]; x[j + 1] = t }
        lo = x[1]; hi = x[n]
        med = (n % 2) ? x[(n + 1) / 2] : (x[n / 2] + x[n / 2 + 1]) / 2
        return n
    }
    {
        k = $2 SUBSEP $1 "." $4
        if ($4 == "errors") { errs[$2] += $5; errseen[$2] = 1; next }
        val[k, ++cnt[k]] = $5 + 0
    }
    END {
        nc = split(contestants, cs, " ")
        nf = 0
        f[++nf] = "ka64.rps";   l[nf] = "keep-alive, 64 conns: req/s"; d[nf] = "↑"
        f[++nf] = "ka64.p99";   l[nf] = "keep-alive, 64 conns: p99 ms"; d[nf] = "↓"
        f[++nf] = "ka64.rpc";   l[nf] = "keep-alive, 64 conns: req per proxy CPU-second"; d[nf] = "↑"
        f[++nf] = "ka64.usr";   l[nf] = "keep-alive, 64 conns: proxy user CPU per request, µs"; d[nf] = "↓"
        f[++nf] = "ka64.sys";   l[nf] = "keep-alive, 64 conns: proxy system CPU per request, µs"; d[nf] = "↓"
        f[++nf] = "ka64.util";  l[nf] = "keep-alive, 64 conns: proxy CPU busy, % of one CPU"; d[nf] = ""
        f[++nf] = "ka64.wait";  l[nf] = "keep-alive, 64 conns: proxy waiting for a CPU, % of the run (sum over its threads)"; d[nf] = ""
        f[++nf] = "ka64.bwait"; l[nf] = "keep-alive, 64 conns: backend waiting for a CPU, % of the run"; d[nf] = ""
        f[++nf] = "ka256.rps";  l[nf] = "keep-alive, 256 conns: req/s"; d[nf] = "↑"
        f[++nf] = "ka256.p99";  l[nf] = "keep-alive, 256 conns: p99 ms"; d[nf] = "↓"
        f[++nf] = "ka256.rpc";  l[nf] = "keep-alive, 256 conns: req per proxy CPU-second"; d[nf] = "↑"
        f[++nf] = "ka256.util"; l[nf] = "keep-alive, 256 conns: proxy CPU busy, % of one CPU"; d[nf] = ""
        f[++nf] = "ka256.wait"; l[nf] = "keep-alive, 256 conns: proxy waiting for a CPU, % of the run (sum over its threads)"; d[nf] = ""
        f[++nf] = "ka256.bconn"; l[nf] = "keep-alive, 256 conns: backend connections opened/s"; d[nf] = "↓"
        f[++nf] = "ka256.bheld"; l[nf] = "keep-alive, 256 conns: backend connections open at the end"; d[nf] = ""
        f[++nf] = "ka256.rss";  l[nf] = "keep-alive, 256 conns: proxy RSS under load, MiB"; d[nf] = "↓"
        f[++nf] = "close.rps";  l[nf] = "new connection per request, 64 at a time: req/s"; d[nf] = "↑"
        f[++nf] = "close.p99";  l[nf] = "new connection per request: p99 ms"; d[nf] = "↓"
        f[++nf] = "close.rpc";  l[nf] = "new connection per request: req per proxy CPU-second"; d[nf] = "↑"
        f[++nf] = "close.segs"; l[nf] = "new connection per request: TCP segments per request (client, proxy and backend sides)"; d[nf] = "↓"
        f[++nf] = "close.bconn"; l[nf] = "new connection per request: backend connections opened/s"; d[nf] = "↓"
        f[++nf] = "big.rps";    l[nf] = "1 MiB responses, 16 conns: MiB/s"; d[nf] = "↑"
        f[++nf] = "big.rpc";    l[nf] = "1 MiB responses: MiB per proxy CPU-second"; d[nf] = "↑"
        f[++nf] = "rate.done";  l[nf] = "fixed " rate " req/s: req/s done"; d[nf] = ""
        f[++nf] = "rate.p50";   l[nf] = "fixed " rate " req/s, open loop: p50 ms"; d[nf] = "↓"
        f[++nf] = "rate.p99";   l[nf] = "fixed " rate " req/s: p99 ms"; d[nf] = "↓"
        f[++nf] = "rate.p999";  l[nf] = "fixed " rate " req/s: p99.9 ms"; d[nf] = "↓"
        f[++nf] = "rate.rpc";   l[nf] = "fixed " rate " req/s: req per proxy CPU-second"; d[nf] = "↑"
        f[++nf] = "idle.rss0";  l[nf] = "RSS idle (fresh), MiB"; d[nf] = "↓"
        f[++nf] = "idle.rss";   l[nf] = "RSS with " idle " idle keep-alive conns, MiB"; d[nf] = "↓"
        f[++nf] = "idle.per";   l[nf] = "RSS per idle keep-alive conn, bytes"; d[nf] = "↓"
        f[++nf] = "sys.calls";  l[nf] = "keep-alive, 64 conns, under perf: system calls per request"; d[nf] = "↓"
        f[++nf] = "sys.epoll";  l[nf] = "keep-alive, 64 conns, under perf: epoll_wait calls per request"; d[nf] = "↓"
        f[++nf] = "sys.cs";     l[nf] = "keep-alive, 64 conns, under perf: context switches per request"; d[nf] = "↓"
        f[++nf] = "sysclose.calls";  l[nf] = "new connection per request, under perf: system calls per request"; d[nf] = "↓"
        f[++nf] = "sysclose.epoll";  l[nf] = "new connection per request, under perf: epoll_wait per request"; d[nf] = "↓"
        f[++nf] = "sysclose.ctl";    l[nf] = "new connection per request, under perf: epoll_ctl per request"; d[nf] = "↓"
        f[++nf] = "sysclose.accept"; l[nf] = "new connection per request, under perf: accept4 per request"; d[nf] = "↓"
        f[++nf] = "sysclose.cs";     l[nf] = "new connection per request, under perf: context switches per request"; d[nf] = "↓"
        f[++nf] = "instr.ir";   l[nf] = "keep-alive, 16 conns, under callgrind: user-space instructions per request"; d[nf] = "↓"
        # TLS rows only where some contestant has a figure: most runs have none.
        split("ecdsa rsa", tk, " "); tn["ecdsa"] = "ECDSA P-256"; tn["rsa"] = "RSA 2048"
        for (t = 1; t <= 2; t++) {
            k = tk[t]; n = "TLS " tn[k]
            f[++nf] = "tlsnew-" k ".hs";   l[nf] = n ", new connection per request: full handshakes/s"; d[nf] = "↑"; opt[nf] = 1
            f[++nf] = "tlsnew-" k ".rpc";  l[nf] = n ", new connection per request: full handshakes per proxy CPU-second"; d[nf] = "↑"; opt[nf] = 1
            f[++nf] = "tlsnew-" k ".cpu";  l[nf] = n ", new connection per request: proxy CPU per full handshake (and its request), µs"; d[nf] = "↓"; opt[nf] = 1
            f[++nf] = "tlsnew-" k ".util"; l[nf] = n ", new connection per request: proxy CPU busy, % of one CPU"; d[nf] = ""; opt[nf] = 1
            f[++nf] = "tlsnew-" k ".resumed"; l[nf] = n ", new connection per request: handshakes resumed, % (s_time -new: none)"; d[nf] = ""; opt[nf] = 1
            f[++nf] = "tlsresume-" k ".hs";   l[nf] = n ", resumed session per request: handshakes/s"; d[nf] = "↑"; opt[nf] = 1
            f[++nf] = "tlsresume-" k ".rpc";  l[nf] = n ", resumed session per request: handshakes per proxy CPU-second"; d[nf] = "↑"; opt[nf] = 1
            f[++nf] = "tlsresume-" k ".cpu";  l[nf] = n ", resumed session per request: proxy CPU per handshake (and its request), µs"; d[nf] = "↓"; opt[nf] = 1
            f[++nf] = "tlsresume-" k ".util"; l[nf] = n ", resumed session per request: proxy CPU busy, % of one CPU"; d[nf] = ""; opt[nf] = 1
            f[++nf] = "tlsresume-" k ".resumed"; l[nf] = n ", resumed session per request: handshakes resumed, % (s_time -reuse)"; d[nf] = "↑"; opt[nf] = 1
            f[++nf] = "tlska64-" k ".rps";  l[nf] = n ", keep-alive, 64 conns: req/s"; d[nf] = "↑"; opt[nf] = 1
            f[++nf] = "tlska64-" k ".p99";  l[nf] = n ", keep-alive, 64 conns: p99 ms"; d[nf] = "↓"; opt[nf] = 1
            f[++nf] = "tlska64-" k ".rpc";  l[nf] = n ", keep-alive, 64 conns: req per proxy CPU-second"; d[nf] = "↑"; opt[nf] = 1
            f[++nf] = "tlska64-" k ".util"; l[nf] = n ", keep-alive, 64 conns: proxy CPU busy, % of one CPU"; d[nf] = ""; opt[nf] = 1
            f[++nf] = "tlsbig-" k ".rps";   l[nf] = n ", 1 MiB responses, 16 conns: MiB/s"; d[nf] = "↑"; opt[nf] = 1
            f[++nf] = "tlsbig-" k ".rpc";   l[nf] = n ", 1 MiB responses: MiB per proxy CPU-second"; d[nf] = "↑"; opt[nf] = 1
            f[++nf] = "tlsbig-" k ".util";  l[nf] = n ", 1 MiB responses: proxy CPU busy, % of one CPU"; d[nf] = ""; opt[nf] = 1
            f[++nf] = "h2tls-" k ".rps";  l[nf] = n ", HTTP/2, 64 conns x 10 streams: req/s"; d[nf] = "↑"; opt[nf] = 1
            f[++nf] = "h2tls-" k ".rpc";  l[nf] = n ", HTTP/2, 64 conns x 10 streams: req per proxy CPU-second"; d[nf] = "↑"; opt[nf] = 1
            f[++nf] = "h2tls-" k ".mean"; l[nf] = n ", HTTP/2, 64 conns x 10 streams: mean ms per request"; d[nf] = "↓"; opt[nf] = 1
            f[++nf] = "h2tls-" k ".util"; l[nf] = n ", HTTP/2, 64 conns x 10 streams: proxy CPU busy, % of one CPU"; d[nf] = ""; opt[nf] = 1
        }

        printf "| figure: median (min–max) of the rounds, ×HAProxy | | "
        for (i = 1; i <= nc; i++) printf "%s | ", cs[i]
        printf "\n|---|:-:|"
        for (i = 1; i <= nc; i++) printf "---|"
        printf "\n"
        for (j = 1; j <= nf; j++) {
            if (opt[j]) {
                any = 0
                for (i = 1; i <= nc; i++) if (cnt[cs[i] SUBSEP f[j]]) any = 1
                if (!any) continue
            }
            printf "| %s | %s | ", l[j], d[j]
            for (i = 1; i <= nc; i++) {
                c = cs[i]
                if (!stats(c SUBSEP f[j])) { printf "– | "; continue }
                m = med; mn = lo; mx = hi
                cell = fmt(m)
                if (cnt[c SUBSEP f[j]] > 1) cell = cell " (" fmt(mn) "–" fmt(mx) ")"
                ref = (c ~ /-2$/) ? "haproxy-2" : "haproxy"
                if (c != ref && stats(ref SUBSEP f[j])) {
                    if (med != 0) cell = cell sprintf(" ×%.2f", m / med)
                    else if (m == 0) cell = cell " ×1"
                }
                printf "%s | ", cell
            }
            printf "\n"
        }
        printf "| errors, all scenarios and rounds (total) | ↓ | "
        for (i = 1; i <= nc; i++) printf "%s | ", (cs[i] in errseen) ? errs[cs[i]] + 0 : "–"
        printf "\n"
    }' "$results"
}

# The issue's targets for lb at one reactor against nginx and HAProxy at one worker.
targets() {
    awk -F'\t' -v idle="$idle_conns" '
    # The median of x[1..n] (sorted in place).
    function middle(x, n,   i, j, t) {
        for (i = 2; i <= n; i++) { t = x[i]; for (j = i - 1; j >= 1 && x[j] > t; j--) x[j + 1] = x[j]; x[j + 1] = t }
        return (n % 2) ? x[(n + 1) / 2] : (x[n / 2] + x[n / 2 + 1]) / 2
    }
    function median(k,   n, i, x) {
        n = cnt[k]
        if (n == 0) return ""
        for (i = 1; i <= n; i++) x[i] = val[k, i]
        return middle(x, n)
    }
    # The median over the rounds of a/b within each round: the rounds interleave the
    # contestants, so this cancels the drift of a shared machine from one round to the next,
    # which the ratio of the two medians keeps.
    function paired(a, b, key,   ka, kb, n, i, x) {
        ka = a SUBSEP key; kb = b SUBSEP key
        n = cnt[ka] < cnt[kb] ? cnt[ka] : cnt[kb]
        if (n == 0) return ""
        for (i = 1; i <= n; i++) x[i] = (val[kb, i] > 0) ? val[ka, i] / val[kb, i] : 0
        return middle(x, n)
    }
    function verdict(ok, text) {
        printf "- %s: %s\n", ok ? "met" : "NOT MET", text
    }
    {
        if ($4 == "errors") { errs[$2] += $5; seen[$2] = 1; next }
        k = $2 SUBSEP $1 "." $4
        val[k, ++cnt[k]] = $5 + 0
    }
    END {
        if (median("lb" SUBSEP "ka64.rpc") != "" && median("haproxy" SUBSEP "ka64.rpc") != "") {
            a = median("lb" SUBSEP "ka64.rpc"); b = median("haproxy" SUBSEP "ka64.rpc")
            verdict(a >= 1.5 * b, sprintf("requests per proxy CPU-second at 64 keep-alive >= 1.5x HAProxy: lb %.0f, HAProxy %.0f (%.2fx)", a, b, a / b))
            f = median("relay" SUBSEP "ka64.rpc")
            if (f != "") printf "  (the floor: the plain TCP relay, no HTTP work, %.0f: %.2fx HAProxy)\n", f, f / b
        }
        a = median("lb-routes" SUBSEP "ka64.rpc"); b = median("lb" SUBSEP "ka64.rpc")
        if (a != "" && b != "")
            verdict(a >= 0.95 * b, sprintf("requests per proxy CPU-second at 64 keep-alive with 20 routes configured within 5%% of lb without: lb-routes %.0f, lb %.0f (%.3fx)", a, b, a / b))
        a = median("lb-routes" SUBSEP "ka64.rpc"); b = median("lb-before" SUBSEP "ka64.rpc")
        if (a != "" && b != "")
            verdict(a >= 0.95 * b, sprintf("requests per proxy CPU-second at 64 keep-alive with 20 routes configured within 5%% of the earlier build (BENCH_BEFORE_BIN): lb-routes %.0f, lb-before %.0f (%.3fx)", a, b, a / b))
        a = median("lb-routes" SUBSEP "instr.ir"); b = median("lb-before" SUBSEP "instr.ir")
        if (a != "" && b != "")
            printf "  (user-space instructions per request, lb-routes against the earlier build: %.0f against %.0f, %.3fx)\n", a, b, a / b
        # The same question without the noise of a shared machine: instructions per request.
        a = median("lb-routes" SUBSEP "instr.ir"); b = median("lb" SUBSEP "instr.ir")
        if (a != "" && b != "")
            verdict(a <= 1.05 * b, sprintf("user-space instructions per request with 20 routes configured within 5%% of lb without: lb-routes %.0f, lb %.0f (%.3fx)", a, b, a / b))
        # Issue #14: the access log on (text or JSON) costs at most 5 % of keep-alive req/s and of
        # requests per proxy CPU-second; judged on the paired median (see paired()).
        split("lb-log lb-json", lc, " ")
        for (i = 1; i <= 2; i++) {
            for (m = 1; m <= 2; m++) {
                mt = (m == 1) ? "rps" : "rpc"
                a = median(lc[i] SUBSEP "ka64." mt); b = median("lb" SUBSEP "ka64." mt)
                p = paired(lc[i], "lb", "ka64." mt)
                if (a != "" && b != "")
                    verdict(p >= 0.95, sprintf("%s at 64 keep-alive with the access log on (%s) within 5%% of lb without: %.3fx, the median of the round-by-round ratios (medians %s %.0f, lb %.0f: %.3fx)", (m == 1) ? "req/s" : "requests per proxy CPU-second", (i == 1) ? "text" : "json", p, lc[i], a, b, a / b))
            }
        }
        split("lb lb-defer", cc, " ")
        for (i = 1; i <= 2; i++) {
            a = median(cc[i] SUBSEP "close.rps"); h = median("haproxy" SUBSEP "close.rps")
            p = paired(cc[i], "haproxy", "close.rps")
            if (a != "" && h != "")
                verdict(p >= 1, sprintf("req/s with a new connection per request%s >= HAProxy (defaults): %.3fx, the median of the round-by-round ratios (medians %s %.0f, HAProxy %.0f: %.2fx)", (i == 2) ? " and tcp_defer_accept" : "", p, cc[i], a, h, a / h))
        }
        a = median("lb" SUBSEP "close.rps"); b = median("lb-before" SUBSEP "close.rps")
        if (a != "" && b != "")
            printf "  (lb against the earlier build (BENCH_BEFORE_BIN) with a new connection per request: %.3fx req/s, the median of the round-by-round ratios; medians %.0f and %.0f)\n", paired("lb", "lb-before", "close.rps"), a, b
        split("close.rps rate.rpc ka64.rps", ns, " ")
        split("req/s with a new connection per request,requests per proxy CPU-second at the fixed rate,req/s at 64 keep-alive", nl, ",")
        for (i = 1; i <= 3; i++) {
            a = median("lb" SUBSEP ns[i]); b = median("lb-nospin" SUBSEP ns[i])
            if (a != "" && b != "")
                printf "  (idle_spin, lb against lb-nospin: %s %.3fx, the median of the round-by-round ratios; medians %.0f and %.0f)\n", nl[i], paired("lb", "lb-nospin", ns[i]), a, b
        }
        a = median("lb-defer" SUBSEP "close.rps"); h = median("haproxy-defer" SUBSEP "close.rps")
        if (a != "" && h != "")
            printf "  (both with TCP_DEFER_ACCEPT: lb-defer %.0f, haproxy-defer %.0f req/s, %.2fx)\n", a, h, a / h
        a = median("nginx-log" SUBSEP "ka64.rpc"); b = median("nginx" SUBSEP "ka64.rpc")
        if (a != "" && b != "")
            printf "  (nginx with its buffered access log: %.0f requests per CPU-second against %.0f without, %.3fx)\n", a, b, a / b
        split("ka64 ka256 close", ss, " ")
        split("64 keep-alive,256 keep-alive,new connection per request", sl, ",")
        for (i = 1; i <= 3; i++) {
            a = median("lb" SUBSEP ss[i] ".rps"); n = median("nginx" SUBSEP ss[i] ".rps"); h = median("haproxy" SUBSEP ss[i] ".rps")
            if (a == "" || n == "" || h == "") continue
            best = n > h ? n : h
            verdict(a >= best, sprintf("req/s at %s >= the better anchor: lb %.0f, nginx %.0f, HAProxy %.0f (%.2fx the better)", sl[i], a, n, h, a / best))
        }
        split("ka256.p99 rate.p99", ps, " ")
        split("256 connections,the fixed rate", pl, ",")
        for (i = 1; i <= 2; i++) {
            a = median("lb" SUBSEP ps[i]); h = median("haproxy" SUBSEP ps[i])
            if (a == "" || h == "") continue
            verdict(a <= h, sprintf("p99 at %s <= HAProxy: lb %.3f ms, HAProxy %.3f ms", pl[i], a, h))
        }
        # TLS, per certificate: handshakes and keep-alive requests per proxy CPU-second.
        split("ecdsa rsa", tk, " "); tn["ecdsa"] = "ECDSA P-256"; tn["rsa"] = "RSA 2048"
        for (t = 1; t <= 2; t++) {
            a = median("lb" SUBSEP "tlsnew-" tk[t] ".rpc"); h = median("haproxy" SUBSEP "tlsnew-" tk[t] ".rpc")
            if (a != "" && h != "")
                verdict(a >= 1.3 * h, sprintf("TLS %s: full handshakes per proxy CPU-second >= 1.3x HAProxy: lb %.0f, HAProxy %.0f (%.2fx)", tn[tk[t]], a, h, a / h))
            a = median("lb" SUBSEP "tlska64-" tk[t] ".rpc"); h = median("haproxy" SUBSEP "tlska64-" tk[t] ".rpc")
            if (a != "" && h != "")
                verdict(a >= 1.2 * h, sprintf("TLS %s: requests per proxy CPU-second at 64 keep-alive >= 1.2x HAProxy: lb %.0f, HAProxy %.0f (%.2fx)", tn[tk[t]], a, h, a / h))
            a = median("lb" SUBSEP "h2tls-" tk[t] ".rpc"); h = median("haproxy" SUBSEP "h2tls-" tk[t] ".rpc")
            if (a != "" && h != "")
                verdict(a >= 1.2 * h, sprintf("TLS %s: HTTP/2 requests per proxy CPU-second, 64 conns x 10 streams >= 1.2x HAProxy: lb %.0f, HAProxy %.0f (%.2fx)", tn[tk[t]], a, h, a / h))
        }
        a = median("lb" SUBSEP "ka256.bconn")
        if (a != "") verdict(a < 1, sprintf("backend connections opened per second during the 256 run near zero (< 1/s): lb %.2f/s", a))
        a = median("lb" SUBSEP "idle.per")
        if (a != "") verdict(a <= 1024, sprintf("RSS per idle keep-alive client connection <= 1 KiB: lb %.0f bytes", a))
        line = ""; bad = 0
        for (c in seen) { line = line sprintf(" %s %d,", c, errs[c]); if (errs[c] > 0) bad = 1 }
        sub(/,$/, "", line)
        verdict(!bad, "no errors in any scenario:" line)
    }' "$results"
}
# What each TLS contestant negotiated (negotiated.tsv, from tls_probe), when TLS scenarios ran.
negotiated() { # negotiated.tsv
    [ -s "$1" ] || return 0
    echo
    echo "## TLS: what each negotiated (openssl s_client -brief: OpenSSL's client defaults, as wrk's and s_time's)"
    echo
    echo "| certificate | contestant | protocol | cipher suite | key exchange | signature | verification |"
    echo "|---|---|---|---|---|---|---|"
    awk -F'\t' '{ printf "| %s | %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6, $7 }' "$1"
}
# BENCH_REPORT_FROM=DIR: print the report of an earlier run again (DIR as BENCH_OUT) and exit.
if [ -n "${BENCH_REPORT_FROM:-}" ]; then
    # shellcheck source=/dev/null
    . "$BENCH_REPORT_FROM/meta.sh"
    results=$BENCH_REPORT_FROM/results.tsv
    cat "$BENCH_REPORT_FROM/header.md"
    report
    negotiated "$BENCH_REPORT_FROM/negotiated.tsv"
    echo
    echo "## Targets (lb, one reactor, against nginx and HAProxy at one worker)"
    echo
    targets
    exit 0
fi

# --- tools --------------------------------------------------------------------------------------
missing=()
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v nginx >/dev/null 2>&1 || missing+=(nginx)
command -v haproxy >/dev/null 2>&1 || missing+=(haproxy)
command -v taskset >/dev/null 2>&1 || missing+=(util-linux)
command -v pgrep >/dev/null 2>&1 || missing+=(procps)
command -v ss >/dev/null 2>&1 || missing+=(iproute2)
command -v valgrind >/dev/null 2>&1 || missing+=(valgrind)
command -v perf >/dev/null 2>&1 || missing+=(linux-perf)
# s_time and s_client for the TLS scenarios, and scripts/certs.sh's certificates.
[ "$tls" = 0 ] || command -v openssl >/dev/null 2>&1 || missing+=(openssl)
case " ${scenarios[*]} " in *" h2tls "*) command -v h2load >/dev/null 2>&1 || missing+=(nghttp2-client) ;; esac
if [ "${#missing[@]}" -gt 0 ]; then
    echo "installing ${missing[*]}"
    # Keep the packages' own services (nginx on port 80, haproxy) from starting.
    policy=
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        policy=/usr/sbin/policy-rc.d
        as_root sh -c "printf '#!/bin/sh\nexit 101\n' >$policy && chmod +x $policy"
    fi
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
    [ -z "$policy" ] || as_root rm -f "$policy"
fi
command -v cargo >/dev/null 2>&1 || { echo "cargo is needed (https://rustup.rs)" >&2; exit 1; }
echo "building lb, loadgen and idleconns (release)"
cargo build --release --bins --quiet
bin=$PWD/target/release

ncpu=$(nproc)
if [ "$ncpu" -lt 2 ]; then
    echo "note: 1 CPU: no pinning, everything shares it" >&2
    client_cpus=0; proxy_cpus=0; both_cpus=0
else
    client_cpus=$client_cpu; proxy_cpus=$proxy_cpu; both_cpus="$client_cpu,$proxy_cpu"
fi
# This script and everything it starts without saying otherwise run on the client CPU.
taskset -pc "$client_cpus" $$ >/dev/null
if [ -n "${BENCH_NICE:-}" ]; then
    renice -n "$BENCH_NICE" -p $$ >/dev/null
fi

# Descriptors: 10,000 idle connections need as many in the client and in the proxy.
hard=$(ulimit -Hn)
[ "$hard" = unlimited ] && hard=65536
[ "$hard" -gt 65536 ] && hard=65536
ulimit -n "$hard"
fdlimit=$hard
if [ $((idle_conns + 500)) -gt "$fdlimit" ]; then
    idle_conns=$((fdlimit - 500))
    echo "note: descriptor limit $fdlimit: the idle test holds $idle_conns connections" >&2
fi
maxconn=$((idle_conns + 100))

tls_ports=()
[ "$tls" = 0 ] || tls_ports=("$tls_port")
for p in "$port" "$admin_port" "$status_port" "$b1" "$b2" "$b3" "${tls_ports[@]}"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
        echo "port $p is in use: stop whatever listens there, or set BENCH_PORT / BENCH_BACKEND_PORT" >&2
        exit 1
    fi
done

work=$(mktemp -d /tmp/lb-bench.XXXXXX)
chmod 755 "$work" # nginx workers (user nobody) read the 1 MiB file from here
mkdir -p "$work/www" "$work/tmp" "$work/runs" "$out"
pids=() # everything started and not yet waited for; killed by pid on exit
forget() {
    local p keep=()
    for p in "${pids[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
    pids=("${keep[@]}")
}
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- configurations -----------------------------------------------------------------------------
head -c 1048576 /dev/zero | tr '\0' 'x' >"$work/www/1m"
chmod -R a+rX "$work/www"
temp_paths() { # nginx writes temp files nowhere else
    local d=$work/tmp/$1
    mkdir -p "$d"
    echo "client_body_temp_path $d/body; proxy_temp_path $d/proxy; fastcgi_temp_path $d/fcgi;
  uwsgi_temp_path $d/uwsgi; scgi_temp_path $d/scgi;"
}

cat >"$work/backend.conf" <<CONF
worker_processes 1;
daemon off;
pid $work/backend.pid;
error_log $work/backend.err warn;
worker_rlimit_nofile $fdlimit;
events { worker_connections $((fdlimit - 100)); }
http {
  $(temp_paths backend)
  access_log off;
  keepalive_requests 1000000000;
  keepalive_timeout 300s;
  default_type text/plain;
  server {
    listen 127.0.0.1:$b1 backlog=4096;
    listen 127.0.0.1:$b2 backlog=4096;
    listen 127.0.0.1:$b3 backlog=4096;
    location / { return 200 "hello from the backend\n"; }
    location = /1m { root $work/www; default_type application/octet-stream; }
  }
  server {
    listen 127.0.0.1:$status_port;
    location / { stub_status; }
  }
}
CONF

for w in 1 2; do
    reuseport=
    [ "$w" = 2 ] && reuseport=" reuseport"
    cat >"$work/nginx-$w.conf" <<CONF
worker_processes $w;
daemon off;
pid $work/nginx-$w.pid;
error_log $work/nginx.err warn;
worker_rlimit_nofile $fdlimit;
events { worker_connections $((fdlimit - 100)); }
http {
  $(temp_paths "nginx-$w")
  access_log off;
  keepalive_requests 1000000000;
  keepalive_timeout 300s;
  upstream backends {
    server 127.0.0.1:$b1;
    server 127.0.0.1:$b2;
    server 127.0.0.1:$b3;
    keepalive 768;
    keepalive_requests 1000000000;
    keepalive_timeout 300s;
  }
  server {
    listen 127.0.0.1:$port backlog=4096$reuseport;
    location / {
      proxy_pass http://backends;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffer_size 16k;
      proxy_buffers 8 64k;
      proxy_busy_buffers_size 128k;
      proxy_max_temp_file_size 0;
    }
  }
}
CONF

    cat >"$work/haproxy-$w.cfg" <<CONF
global
  nbthread $w
  maxconn $maxconn
  # HAProxy wants 2 x maxconn descriptors; idle client connections need only one each.
  ulimit-n $fdlimit
  no strict-limits
$([ "$busy_poll" = 1 ] && echo "  busy-polling")
defaults
  mode http
  maxconn $maxconn
  timeout connect 2s
  timeout client 300s
  timeout server 30s
  timeout http-keep-alive 300s
  http-reuse always
frontend fe
  bind 127.0.0.1:$port
  default_backend backends
backend backends
  balance roundrobin
  server b1 127.0.0.1:$b1
  server b2 127.0.0.1:$b2
  server b3 127.0.0.1:$b3
CONF

    cat >"$work/lb-$w.toml" <<TOML
listen = "127.0.0.1:$port"
admin = "127.0.0.1:$admin_port"
workers = $w
access_log = false
busy_poll = $([ "$busy_poll" = 1 ] && echo true || echo false)
log_level = "warn"
[timeouts]
client_idle = "300s"
[limits]
max_connections = $maxconn
# Idle keep-alive connections kept per backend: 256, as nginx's keepalive 768 over three.
pool_max_idle = 256
[[backend]]
address = "127.0.0.1:$b1"
[[backend]]
address = "127.0.0.1:$b2"
[[backend]]
address = "127.0.0.1:$b3"
TOML
done
# lb-routes: the 1-worker configuration and 20 routes to a pool of the same three backends; the
# requests (Host 127.0.0.1, path /, no X-Svc) match none, so all 20 are tried every time.
{
    cat "$work/lb-1.toml"
    echo '[[pool]]'
    echo 'name = "other"'
    for i in 1 2 3; do
        printf '[[pool.backend]]\nname = "other-%s"\naddress = "127.0.0.1:%s"\n' "$i" "$((b1 + i - 1))"
    done
    for i in $(seq 1 20); do
        echo '[[route]]'
        echo "name = \"svc$i\""
        case $((i % 3)) in
            0) echo "host = \"svc$i.example.com\"" ;;
            1) echo "path_prefix = \"/svc$i/\"" ;;
            2) echo "header = { name = \"X-Svc\", value = \"$i\" }" ;;
        esac
        echo 'pool = "other"'
    done
} >"$work/lb-routes.toml"
"$bin/lb" --config "$work/lb-routes.toml" --check >/dev/null
# lb-log and lb-json: the 1-worker configuration with the access log on, into a file.
for f in text json; do
    name=lb-log
    [ "$f" = json ] && name=lb-json
    sed "s|^access_log = false\$|access_log = true\naccess_log_format = \"$f\"\naccess_log_path = \"$work/access-$name.log\"|" \
        "$work/lb-1.toml" >"$work/$name.toml"
    grep -q '^access_log = true' "$work/$name.toml"
    "$bin/lb" --config "$work/$name.toml" --check >/dev/null
done
# lb-nospin: no polling on before a sleep.
sed "1a idle_spin = \"0s\"" "$work/lb-1.toml" >"$work/lb-nospin.toml"
"$bin/lb" --config "$work/lb-nospin.toml" --check >"$work/lb-nospin-check.txt"
grep -q "^idle_spin   0s" "$work/lb-nospin-check.txt"
# lb-defer and haproxy-defer: TCP_DEFER_ACCEPT on the listener.
sed "1a tcp_defer_accept = true" "$work/lb-1.toml" >"$work/lb-defer.toml"
"$bin/lb" --config "$work/lb-defer.toml" --check >"$work/lb-defer-check.txt"
grep -q "^tcp_defer_accept true" "$work/lb-defer-check.txt"
sed "s|^  bind 127.0.0.1:$port\$|  bind 127.0.0.1:$port defer-accept|" "$work/haproxy-1.cfg" >"$work/haproxy-defer.cfg"
grep -q "defer-accept" "$work/haproxy-defer.cfg"
# nginx-log: nginx's 1-worker configuration with a buffered access log.
awk -v logconf="  log_format lb '\$remote_addr:\$remote_port [\$time_iso8601] \"\$request\" \$status \$body_bytes_sent \$upstream_addr \$request_time';
  access_log $work/access-nginx-log.log lb buffer=64k flush=100ms;" \
    '$0 == "  access_log off;" { print logconf; next } { print }' "$work/nginx-1.conf" >"$work/nginx-log.conf"
grep -q "buffer=64k" "$work/nginx-log.conf"
# TLS: the same configurations with a TLS listener on tls_port besides the plain one, one per
# certificate. Everything else about TLS is each one's default (ciphers, groups, ticket keys),
# but for what the three must agree on: TLS 1.2 and 1.3 only, session resumption by tickets and
# by a server-side cache, ALPN h2 and http/1.1 (wrk and s_time offer no ALPN: they get HTTP/1.1).
if [ "$tls" = 1 ]; then
    ./scripts/certs.sh "$certs"
    certs=$(cd "$certs" && pwd)
    for k in "${tls_certs[@]}"; do
        # HAProxy reads a certificate and its key from one file.
        cat "$certs/$k.crt" "$certs/$k.key" >"$work/$k.pem"
        for w in 1 2; do
            reuseport=
            [ "$w" = 2 ] && reuseport=" reuseport"
            # nginx: tickets are on by default and the cache off; the shared cache serves all
            # workers, as lb's serves all its reactors.
            awk -v plain="    listen 127.0.0.1:$port backlog=4096$reuseport;" -v tls="    listen 127.0.0.1:$tls_port ssl http2 backlog=4096$reuseport;
    ssl_certificate $certs/$k.crt;
    ssl_certificate_key $certs/$k.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache shared:SSL:10m;
    ssl_session_tickets on;" '{ print } $0 == plain { print tls }' "$work/nginx-$w.conf" >"$work/nginx-$w-$k.conf"
            grep -q ssl_certificate "$work/nginx-$w-$k.conf"
            # HAProxy: tickets and a session cache (tune.ssl.cachesize, 20,000) by default; ALPN
            # only when bound with it.
            awk -v plain="  bind 127.0.0.1:$port" -v tls="  bind 127.0.0.1:$tls_port ssl crt $work/$k.pem alpn h2,http/1.1" '
                { print }
                $0 == "global" { print "  ssl-default-bind-options ssl-min-ver TLSv1.2" }
                $0 == plain { print tls }' "$work/haproxy-$w.cfg" >"$work/haproxy-$w-$k.cfg"
            grep -q " ssl crt " "$work/haproxy-$w-$k.cfg"
            cat "$work/lb-$w.toml" - >"$work/lb-$w-$k.toml" <<TOML
[tls]
listen = "127.0.0.1:$tls_port"
min_version = "1.2"
handshake_timeout = "10s"
redirect_http = false
[[tls.certificate]]
cert = "$certs/$k.crt"
key = "$certs/$k.key"
TOML
        done
        sed "1a idle_spin = \"0s\"" "$work/lb-1-$k.toml" >"$work/lb-nospin-$k.toml"
    done
    # Until lb terminates TLS its config check refuses the [tls] table: lb then sits the TLS
    # scenarios out instead of failing the run.
    lb_tls=1
    if ! "$bin/lb" --config "$work/lb-1-${tls_certs[0]}.toml" --check >"$work/lb-tls-check.txt" 2>&1; then
        if grep -q "unknown key 'tls'" "$work/lb-tls-check.txt"; then
            lb_tls=0
            echo "note: this lb has no TLS (its config check refuses [tls]): lb sits the TLS scenarios out" >&2
        else
            echo "lb refuses the TLS configuration:" >&2
            cat "$work/lb-tls-check.txt" >&2
            exit 1
        fi
    fi
fi
# Under valgrind nginx runs as one process: no master to fork the worker.
{ echo "master_process off;"; cat "$work/nginx-1.conf"; } >"$work/nginx-cg.conf"
"$bin/lb" --config "$work/lb-1.toml" --check >/dev/null

# --- helpers ------------------------------------------------------------------------------------
wait_port() { # port [tries of 0.05 s; a proxy under valgrind takes seconds to start]
    for _ in $(seq 1 "${2:-200}"); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "nothing listens on $1" >&2
    return 1
}

# A process and its children (nginx: the master and its workers).
proc_tree() {
    echo "$1"
    pgrep -P "$1" || true
}

# User and system CPU time (utime, stime) of a process tree, in clock ticks.
cpu_ticks() {
    local u=0 k=0 p stat a
    for p in $(proc_tree "$1"); do
        stat=$(cat "/proc/$p/stat" 2>/dev/null) || continue
        read -r -a a <<<"${stat##*) }" # fields from the 3rd (state) on
        u=$((u + a[11]))
        k=$((k + a[12]))
    done
    echo "$u $k"
}
clk_tck=$(getconf CLK_TCK)

# The proxy's CPU time over a run: requests per CPU-second, user and system CPU microseconds per
# request, and how busy it was (% of one CPU).
rec_cpu() { # scenario contestant round requests seconds "user system before" "user system after"
    local u0 k0 u1 k1
    read -r u0 k0 <<<"$6"
    read -r u1 k1 <<<"$7"
    awk -v s="$1" -v c="$2" -v r="$3" -v n="$4" -v secs="$5" -v u="$((u1 - u0))" -v k="$((k1 - k0))" \
        -v hz="$clk_tck" 'BEGIN {
        t = u + k; if (t < 1) t = 1
        printf "%s\t%s\t%s\trpc\t%.0f\n", s, c, r, n / (t / hz)
        printf "%s\t%s\t%s\tusr\t%.2f\n", s, c, r, u / hz * 1e6 / n
        printf "%s\t%s\t%s\tsys\t%.2f\n", s, c, r, k / hz * 1e6 / n
        printf "%s\t%s\t%s\tcpu\t%.2f\n", s, c, r, (u + k) / hz * 1e6 / n
        printf "%s\t%s\t%s\tutil\t%.0f\n", s, c, r, (u + k) / hz / secs * 100
    }' >>"$results"
}

# Time the threads of a process tree spent runnable but waiting for a CPU, in ns
# (/proc/PID/task/TID/schedstat, 2nd field): how much other work got in the way.
wait_ns() {
    local t=0 p f a
    for p in $(proc_tree "$1"); do
        for f in /proc/"$p"/task/*/schedstat; do
            read -r -a a 2>/dev/null <"$f" || continue
            t=$((t + a[1]))
        done
    done
    echo "$t"
}

# VmRSS of a process tree, in KiB.
rss_kib() {
    local t=0 p v
    for p in $(proc_tree "$1"); do
        v=$(awk '/^VmRSS:/ { print $2 }' "/proc/$p/status" 2>/dev/null) || continue
        t=$((t + ${v:-0}))
    done
    echo "$t"
}

# Connections the backend has accepted so far; this query itself is one of them.
backend_accepts() {
    local reply
    exec 4<>"/dev/tcp/127.0.0.1/$status_port"
    printf 'GET / HTTP/1.0\r\nHost: status\r\n\r\n' >&4
    reply=$(cat <&4)
    exec 4<&-
    awk '/^ *[0-9]+ +[0-9]+ +[0-9]+ *\r?$/ { print $1; exit }' <<<"$reply"
}

# Established connections to the backends, counted at the backend's end (the proxy's pool).
backend_established() {
    ss -Htn state established "( sport = :$b1 or sport = :$b2 or sport = :$b3 )" | wc -l
}

results=$work/results.tsv
: >"$results"
rec() { # scenario contestant round metric value
    printf '%s\t%s\t%s\t%s\t%s\n' "$@" >>"$results"
}

# wrk's latency ("850.00us", "1.20ms", "2.00s") in ms.
wrk_p99() {
    awk '$1 == "99%" { v = $2
        if (v ~ /us$/) { sub(/us$/, "", v); v /= 1000 }
        else if (v ~ /ms$/) { sub(/ms$/, "", v) }
        else if (v ~ /m$/) { sub(/m$/, "", v); v *= 60000 }
        else if (v ~ /s$/) { sub(/s$/, "", v); v *= 1000 }
        printf "%.3f\n", v }' "$1"
}
wrk_errors() {
    awk '/Socket errors:/ { gsub(/,/, ""); n += $4 + $6 + $8 + $10 }
         /Non-2xx or 3xx responses:/ { n += $NF }
         END { print n + 0 }' "$1"
}
# TCP segments sent on the whole host so far, both ends of every loopback connection.
tcp_out_segments() { awk '$1 == "Tcp:" && $12 ~ /^[0-9]+$/ { print $12 }' /proc/net/snmp; }
wrk_requests() { awk '/ requests in / { print $1 }' "$1"; }
wrk_rps() { awk '/^Requests\/sec:/ { print $2 }' "$1"; }

cpid= # the running contestant's pid (none for direct)
target=
scheme=http
tls_kind= # the certificate (ecdsa, rsa) of a TLS scenario: contestants listen on tls_port too
start_contestant() { # name [command prefix; default: taskset to the proxy's CPUs]
    local name=$1 kind=${1%-2} workers=1 cpus=$proxy_cpus
    shift
    if [ "$name" != "$kind" ]; then workers=2; cpus=$both_cpus; fi
    local conf=$workers${tls_kind:+-$tls_kind}
    local prefix=("$@") nginx_conf=$work/nginx-$conf.conf tries=200
    if [ "${#prefix[@]}" = 0 ]; then
        prefix=(taskset -c "$cpus")
    elif [ "${prefix[0]}" = valgrind ]; then
        nginx_conf=$work/nginx-cg.conf
        tries=600
    fi
    cpid=
    target=127.0.0.1:$port
    scheme=http
    if [ -n "$tls_kind" ]; then target=127.0.0.1:$tls_port; scheme=https; fi
    case $kind in
        direct) target=127.0.0.1:$b1; return 0 ;;
        relay) "${prefix[@]}" "$bin/relay" --listen "127.0.0.1:$port" --backend "127.0.0.1:$b1" \
            --backend "127.0.0.1:$b2" --backend "127.0.0.1:$b3" 2>>"$work/relay.log" & ;;
        lb) "${prefix[@]}" "$bin/lb" --config "$work/lb-$conf.toml" 2>>"$work/lb.log" & ;;
        lb-routes) "${prefix[@]}" "$bin/lb" --config "$work/lb-routes.toml" 2>>"$work/lb.log" & ;;
        lb-before) "${prefix[@]}" "$BENCH_BEFORE_BIN" --config "$work/lb-1.toml" 2>>"$work/lb.log" & ;;
        lb-log | lb-json | lb-defer) "${prefix[@]}" "$bin/lb" --config "$work/$kind.toml" 2>>"$work/lb.log" & ;;
        lb-nospin) "${prefix[@]}" "$bin/lb" --config "$work/lb-nospin${tls_kind:+-$tls_kind}.toml" 2>>"$work/lb.log" & ;;
        haproxy-defer) "${prefix[@]}" haproxy -db -f "$work/haproxy-defer.cfg" 2>>"$work/haproxy.log" & ;;
        nginx-log) "${prefix[@]}" nginx -p "$work" -e "$work/nginx.err" -c "${nginx_conf/nginx-1/nginx-log}" & ;;
        nginx) "${prefix[@]}" nginx -p "$work" -e "$work/nginx.err" -c "$nginx_conf" & ;;
        haproxy) "${prefix[@]}" haproxy -db -f "$work/haproxy-$conf.cfg" 2>>"$work/haproxy.log" & ;;
        *) echo "unknown contestant $name" >&2; exit 2 ;;
    esac
    cpid=$!
    pids+=("$cpid")
    if ! wait_port "$port" "$tries" || { [ -n "$tls_kind" ] && ! wait_port "$tls_port" "$tries"; } \
        || ! kill -0 "$cpid" 2>/dev/null; then
        echo "$name did not start; its log:" >&2
        tail -n 20 "$work/$kind.log" "$work/nginx.err" 2>/dev/null >&2 || true
        exit 1
    fi
}
stop_contestant() {
    [ -n "$cpid" ] || return 0
    kill "$cpid" 2>/dev/null || true
    wait "$cpid" 2>/dev/null || true
    forget "$cpid"
    cpid=
    # A run's access log lines are counted, then dropped: a full run would write gigabytes.
    local f
    for f in "$work"/access-*.log; do
        [ -f "$f" ] || continue
        printf '%s\t%s\n' "${f##*/access-}" "$(wc -l <"$f")" >>"$work/access-lines.tsv"
        rm -f "$f"
    done
    # The ports must be free before the next one binds them.
    for _ in $(seq 1 100); do
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null \
            && { [ -z "$tls_kind" ] || ! (exec 3<>"/dev/tcp/127.0.0.1/$tls_port") 2>/dev/null; }; then
            return 0
        fi
        sleep 0.05
    done
}

wrk_run() { # output connections seconds path [wrk args]
    local o=$1 c=$2 d=$3 path=$4
    shift 4
    taskset -c "$client_cpus" wrk -t1 -c"$c" -d"${d}s" --timeout 10s --latency "$@" "$scheme://$target$path" >"$o" 2>&1
}

# A closed-loop wrk scenario: warm-up, then the measured run with the proxy's CPU time, the
# backend's accepted connections and (sampled every 0.25 s) the proxy's RSS.
closed_loop() { # scenario contestant round connections path [wrk args]
    local s=$1 c=$2 r=$3 conns=$4 path=$5
    shift 5
    local o=$work/runs/$s-$c-$r.txt
    wrk_run "$work/runs/$s-$c-$r.warmup.txt" "$conns" "$warmup" "$path" "$@"
    local t0= t1= a0 a1 rss=0 v w0=0 w1=0 bw0 bw1
    [ -z "$cpid" ] || { t0=$(cpu_ticks "$cpid"); w0=$(wait_ns "$cpid"); }
    bw0=$(wait_ns "$backend_pid")
    a0=$(backend_accepts)
    local g0 g1
    g0=$(tcp_out_segments)
    wrk_run "$o" "$conns" "$duration" "$path" "$@" &
    local wpid=$!
    pids+=("$wpid")
    while kill -0 "$wpid" 2>/dev/null; do
        if [ -n "$cpid" ]; then
            v=$(rss_kib "$cpid")
            [ "$v" -gt "$rss" ] && rss=$v
        fi
        sleep 0.25
    done
    wait "$wpid" || { echo "wrk failed:" >&2; cat "$o" >&2; exit 1; }
    forget "$wpid"
    g1=$(tcp_out_segments)
    a1=$(backend_accepts)
    [ -z "$cpid" ] || { t1=$(cpu_ticks "$cpid"); w1=$(wait_ns "$cpid"); }
    bw1=$(wait_ns "$backend_pid")
    local held=0
    [ -z "$cpid" ] || held=$(backend_established)
    local n rps secs
    n=$(wrk_requests "$o")
    rps=$(wrk_rps "$o")
    secs=$(awk '/ requests in / { v = $4; sub(/s,$/, "", v); print v }' "$o")
    rec "$s" "$c" "$r" rps "$rps"
    rec "$s" "$c" "$r" p99 "$(wrk_p99 "$o")"
    rec "$s" "$c" "$r" errors "$(wrk_errors "$o")"
    rec "$s" "$c" "$r" segs "$(awk -v g="$((g1 - g0))" -v n="$n" 'BEGIN { printf "%.2f", g / n }')"
    rec "$s" "$c" "$r" bwait "$(awk -v w="$((bw1 - bw0))" -v s="$secs" 'BEGIN { printf "%.1f", w / 1e9 / s * 100 }')"
    if [ -n "$cpid" ]; then
        rec "$s" "$c" "$r" wait "$(awk -v w="$((w1 - w0))" -v s="$secs" 'BEGIN { printf "%.1f", w / 1e9 / s * 100 }')"
        # Direct, these would be the client's own connections.
        rec "$s" "$c" "$r" bconn "$(awk -v a="$((a1 - a0 - 1))" -v s="$secs" 'BEGIN { printf "%.2f", a / s }')"
        rec "$s" "$c" "$r" bheld "$held"
        rec_cpu "$s" "$c" "$r" "$n" "$secs" "$t0" "$t1"
        rec "$s" "$c" "$r" rss "$(awk -v k="$rss" 'BEGIN { printf "%.2f", k / 1024 }')"
    fi
    printf '  %-10s %10s req/s  p99 %s ms  errors %s\n' "$c" "$rps" "$(wrk_p99 "$o")" "$(wrk_errors "$o")"
}

# HTTP/2 over TLS: h2load, 64 connections with 10 streams each in flight, for the run's duration.
# The mean time per request stands for latency: h2load gives no percentiles.
h2_run() { # scenario contestant round
    local s=$1 c=$2 r=$3
    local o=$work/runs/$s-$c-$r.txt
    taskset -c "$client_cpus" h2load -t1 -c64 -m10 -D "$warmup" "https://$target/" >"$o.warmup" 2>&1 || true
    local t0 t1
    t0=$(cpu_ticks "$cpid")
    taskset -c "$client_cpus" h2load -t1 -c64 -m10 -D "$duration" "https://$target/" >"$o" 2>&1 \
        || { echo "h2load failed:" >&2; cat "$o" >&2; exit 1; }
    t1=$(cpu_ticks "$cpid")
    local n rps secs ok proto
    # "finished in 3.00s, 41000.00 req/s, 2.00MB/s"
    secs=$(awk '/^finished in/ { v = $3; sub(/s,$/, "", v); print v }' "$o")
    rps=$(awk '/^finished in/ { print $4 }' "$o")
    n=$(awk '/^requests:/ { print $6 }' "$o")
    ok=$(awk '/^status codes:/ { print $3 }' "$o")
    proto=$(awk '/^Application protocol:/ { print $3 }' "$o")
    if [ "$proto" != h2 ]; then echo "$c did not negotiate h2 (got '${proto}'):" >&2; cat "$o" >&2; exit 1; fi
    rec "$s" "$c" "$r" rps "$rps"
    rec "$s" "$c" "$r" mean "$(awk '/^time for request:/ { v = $6; f = 1; if (v ~ /us$/) f = 0.001; else if (v ~ /ms$/) f = 1; else if (v ~ /s$/) f = 1000; sub(/[mu]?s$/, "", v); printf "%.3f", v * f }' "$o")"
    rec "$s" "$c" "$r" errors "$((n - ok))"
    rec_cpu "$s" "$c" "$r" "$n" "$secs" "$t0" "$t1"
    printf '  %-10s %10s req/s  %s succeeded of %s, %s\n' "$c" "$rps" "$ok" "$n" "$proto"
}

rate_run() { # contestant round
    local c=$1 r=$2 s=rate
    local o=$work/runs/$s-$c-$r.txt
    wrk_run "$work/runs/$s-$c-$r.warmup.txt" 64 "$warmup" /
    local t0= t1= spin=
    if [ "$rate_spin" = 1 ]; then
        # Keeps the proxy's CPU from going idle: waking an idle vCPU can take milliseconds on a
        # busy host, and a proxy that needs little CPU idles most between requests.
        taskset -c "$proxy_cpu" nice -n 19 sh -c 'while :; do :; done' &
        spin=$!
        pids+=("$spin")
    fi
    [ -z "$cpid" ] || t0=$(cpu_ticks "$cpid")
    taskset -c "$client_cpus" "$bin/loadgen" --target "$target" --connections 64 --rate "$rate" \
        --duration "$rate_duration" --timeout 10 >"$o"
    [ -z "$cpid" ] || t1=$(cpu_ticks "$cpid")
    if [ -n "$spin" ]; then
        kill "$spin" 2>/dev/null || true
        wait "$spin" 2>/dev/null || true
        forget "$spin"
    fi
    local n failed p50 p99 p999
    n=$(awk '/^requests sent:/ { print $3 }' "$o")
    failed=$(awk '/^requests failed:/ { print $3 }' "$o")
    read -r p50 p99 p999 < <(awk '/^latency:/ { print $3, $6, $9 }' "$o")
    rec "$s" "$c" "$r" p50 "$p50"
    rec "$s" "$c" "$r" p99 "$p99"
    rec "$s" "$c" "$r" p999 "$p999"
    rec "$s" "$c" "$r" errors "$failed"
    rec "$s" "$c" "$r" done "$(awk -v n="$n" -v d="$rate_duration" 'BEGIN { printf "%.0f", n / d }')"
    if [ -n "$cpid" ]; then
        rec_cpu "$s" "$c" "$r" "$n" "$rate_duration" "$t0" "$t1"
    fi
    printf '  %-10s p50 %s ms  p99 %s ms  p99.9 %s ms  errors %s\n' "$c" "$p50" "$p99" "$p999" "$failed"
}

idle_run() { # contestant round
    local c=$1 r=$2 s=idle
    [ -n "$cpid" ] || return 0 # nothing to measure for direct
    # The relay holds a backend connection and two buffers per client: not made to idle.
    [ "$c" != relay ] || return 0
    local o=$work/runs/$s-$c-$r.txt
    sleep 0.5
    local rss0 rss1 hold=2
    rss0=$(rss_kib "$cpid")
    taskset -c "$client_cpus" "$bin/idleconns" --target "$target" --connections "$idle_conns" \
        --hold "$hold" >"$o" &
    local ipid=$!
    pids+=("$ipid")
    for _ in $(seq 1 1200); do
        grep -q '^ready:' "$o" && break
        kill -0 "$ipid" 2>/dev/null || break
        sleep 0.1
    done
    sleep 1
    rss1=$(rss_kib "$cpid")
    wait "$ipid" || { echo "idleconns failed:" >&2; cat "$o" >&2; exit 1; }
    forget "$ipid"
    local open failed still
    read -r open failed < <(awk '/^ready:/ { print $2, $4 }' "$o")
    still=$(awk '/still open/ { print $3 }' "$o")
    rec "$s" "$c" "$r" rss0 "$(awk -v k="$rss0" 'BEGIN { printf "%.2f", k / 1024 }')"
    rec "$s" "$c" "$r" rss "$(awk -v k="$rss1" 'BEGIN { printf "%.2f", k / 1024 }')"
    rec "$s" "$c" "$r" per "$(awk -v a="$rss0" -v b="$rss1" -v n="$idle_conns" 'BEGIN { printf "%.0f", (b - a) * 1024 / n }')"
    rec "$s" "$c" "$r" errors "$((failed + open - still))"
    printf '  %-10s RSS %s -> %s KiB with %s idle connections (%s failed, %s still open after %ss)\n' \
        "$c" "$rss0" "$rss1" "$open" "$failed" "$still" "$hold"
}

# System calls (all; epoll_wait, epoll_ctl, accept4) and context switches of the proxy per
# request, counted by perf in runs of their own (counting costs the proxy a little CPU):
# sys at 64 keep-alive connections, sysclose with a new connection per request.
sys_run() { # scenario contestant round [wrk args]
    local s=$1 c=$2 r=$3
    shift 3
    [ -n "$cpid" ] || return 0
    if ! command -v perf >/dev/null 2>&1; then
        echo "  $c: perf is missing (Debian: linux-perf), no system call counts"
        return 0
    fi
    local o=$work/runs/$s-$c-$r.txt pf=$work/runs/$s-$c-$r.perf
    wrk_run "$work/runs/$s-$c-$r.warmup.txt" 64 "$warmup" / "$@"
    perf stat -x, -o "$pf" -e raw_syscalls:sys_enter,syscalls:sys_enter_epoll_wait \
        -e syscalls:sys_enter_epoll_ctl,syscalls:sys_enter_accept4,context-switches \
        -p "$(proc_tree "$cpid" | paste -sd, -)" -- \
        taskset -c "$client_cpus" wrk -t1 -c64 -d"${duration}s" --timeout 10s "$@" "http://$target/" >"$o" 2>&1 || {
        echo "  $c: perf stat failed: $(tail -n 1 "$pf")"
        return 0
    }
    awk -F, -v n="$(wrk_requests "$o")" -v s="$s" -v c="$c" -v r="$r" '
        $3 == "raw_syscalls:sys_enter" { k = "calls" }
        $3 == "syscalls:sys_enter_epoll_wait" { k = "epoll" }
        $3 == "syscalls:sys_enter_epoll_ctl" { k = "ctl" }
        $3 == "syscalls:sys_enter_accept4" { k = "accept" }
        $3 == "context-switches" { k = "cs" }
        k != "" { printf "%s\t%s\t%s\t%s\t%.3f\n", s, c, r, k, ($1 + 0) / n; k = "" }
    ' "$pf" >>"$results"
    rec "$s" "$c" "$r" errors "$(wrk_errors "$o")"
    printf '  %-10s %s\n' "$c" "$(awk -F, '$3 != "" { sub(/^[a-z_]+:(sys_enter_)?/, "", $3); printf "%s %s  ", $1, $3 }' "$pf")requests $(wrk_requests "$o")"
}

# User-space instructions per request, counted by callgrind: unlike seconds, the same for the
# same binary and load whatever else the machine is doing. The proxy runs under valgrind (1
# worker; nginx without its master process), uninstrumented through the warm-up; counting is
# switched on for one closed-loop wrk run of 16 connections and the counts dumped at its end.
# Kernel work is not counted: that is what the sys scenario's system calls stand for.
instr_run() { # contestant round
    local c=$1 r=$2 s=instr
    case $c in
        relay | lb | lb-routes | lb-before | lb-log | lb-json | nginx | haproxy) ;;
        *) return 0 ;; # direct has no proxy; one worker is enough to count instructions
    esac
    if ! command -v valgrind >/dev/null 2>&1; then
        echo "  $c: valgrind is missing, no instruction counts"
        return 0
    fi
    local o=$work/runs/$s-$c-$r.txt cg=$work/runs/$s-$c-$r.callgrind
    # /usr/bin/valgrind execs valgrind.bin: the contestant's pid is the one callgrind_control
    # talks to.
    start_contestant "$c" valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$cg"
    wrk_run "$work/runs/$s-$c-$r.warmup.txt" 16 "$warmup" /
    callgrind_control -i on "$cpid" >/dev/null 2>&1
    wrk_run "$o" 16 "$duration" /
    callgrind_control -d "$cpid" >/dev/null 2>&1
    stop_contestant
    local n ir
    n=$(wrk_requests "$o")
    ir=$(awk '/^totals:/ { print $2 }' "$cg".1 2>/dev/null)
    if [ -z "$ir" ] || [ "${n:-0}" -eq 0 ]; then
        echo "  $c: no callgrind totals" >&2
        return 0
    fi
    rec "$s" "$c" "$r" ir "$((ir / n))"
    rec "$s" "$c" "$r" errors "$(wrk_errors "$o")"
    printf '  %-10s %s instructions per request (%s requests)\n' "$c" "$((ir / n))" "$n"
}

# What a TLS contestant negotiates with OpenSSL's client defaults (those of wrk and s_time, which
# use the same library): protocol, cipher suite, key exchange group, signature; once per
# contestant and certificate, into negotiated.tsv. Then the request s_time sends (HTTP/1.0, no
# Host), which must be answered 200; its answer's size is what every s_time connection must read.
declare -A tls_probed=() tls_bytes=()
tls_probe() { # contestant
    local c=$1 o=$work/runs/probe-$1-$tls_kind
    [ -z "${tls_probed[$c-$tls_kind]:-}" ] || return 0
    tls_probed[$c-$tls_kind]=1
    timeout 10 openssl s_client -brief -connect "$target" -servername localhost -CAfile "$certs/ca.crt" \
        </dev/null >"$o.brief" 2>&1 || true
    awk -F': *' -v c="$c" -v k="$tls_kind" '
        /^Protocol version:/ { p = $2 } /^Ciphersuite:/ { s = $2 } /^Server Temp Key:/ { g = $2 }
        /^Signature type:/ { t = $2 } /^Verification:/ { v = $2 }
        END { printf "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", k, c, p ? p : "no handshake", s, g, t, v }' \
        "$o.brief" >>"$work/negotiated.tsv"
    printf 'GET / HTTP/1.0\r\n\r\n' | timeout 10 openssl s_client -quiet -ign_eof -connect "$target" \
        -servername localhost >"$o.get" 2>/dev/null || true
    tls_bytes[$c-$tls_kind]=$(wc -c <"$o.get")
    if ! head -n 1 "$o.get" | grep -q '^HTTP/1\.[01] 200'; then
        echo "  $c: no 200 over TLS to GET / HTTP/1.0: $(head -n 1 "$o.get")" >&2
        tls_bytes[$c-$tls_kind]=-1
    fi
    printf '  %-10s %s\n' "$c" "$(cut -f3- "$work/negotiated.tsv" | tail -n 1 | tr '\t' ' ')"
}

# Handshakes per second and the proxy's CPU per handshake, from tls_clients openssl s_time
# processes at once, each one connection after another: a handshake, GET / (HTTP/1.0, answered
# and closed), the next. -new offers no session, so every handshake is a full one; -reuse offers
# the first connection's session every time. wrk and h2load are no use for full handshakes: both
# resume the session of a connection's previous life when they reconnect (seen at nginx with
# $ssl_session_reused: over 99 % resumed). s_time prints a * per new session and an r per
# resumed one: the figures say which kind was measured. The client (OpenSSL 3 verifying the
# server's signature) can be the bottleneck: ECDSA handshakes cost it more than the server; the
# proxy's CPU per handshake is the figure to compare, its busy % says how loaded it was.
tls_handshakes() { # scenario contestant round -new|-reuse
    local s=$1 c=$2 r=$3 mode=$4
    local o=$work/runs/$s-$c-$r i p
    taskset -c "$client_cpus" openssl s_time -connect "$target" "$mode" -www / -time "$warmup" \
        >"$o.warmup.txt" 2>&1 || true
    local t0 t1 w0 w1 start end spids=() failed=0
    t0=$(cpu_ticks "$cpid"); w0=$(wait_ns "$cpid"); start=$(date +%s%N)
    for i in $(seq 1 "$tls_clients"); do
        taskset -c "$client_cpus" openssl s_time -connect "$target" "$mode" -www / -time "$duration" \
            >"$o.$i.txt" 2>&1 &
        spids+=("$!")
        pids+=("$!")
    done
    for p in "${spids[@]}"; do
        wait "$p" || failed=$((failed + 1))
        forget "$p"
    done
    end=$(date +%s%N); t1=$(cpu_ticks "$cpid"); w1=$(wait_ns "$cpid")
    local n full resumed bad secs
    # Per connection s_time reads the whole answer; a connection that read another size than the
    # probe's got something else (an error page, a cut answer).
    read -r n full resumed bad < <(awk -v want="${tls_bytes[$c-$tls_kind]:--1}" '
        /^[r*]+$/ { full += gsub(/\*/, ""); resumed += gsub(/r/, "") }
        /connections in [0-9]+ real seconds/ { n += $1; if ($(NF - 4) + 0 != want) bad += $1 }
        END { print n + 0, full + 0, resumed + 0, bad + 0 }' "$o".[0-9]*.txt)
    secs=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.3f", (b - a) / 1e9 }')
    if [ "$n" = 0 ]; then
        echo "  $c: no connections; s_time said: $(tail -n 3 "$o.1.txt" | tr '\n' ' ')" >&2
        rec "$s" "$c" "$r" errors "$((failed + 1))"
        return 0
    fi
    rec "$s" "$c" "$r" hs "$(awk -v n="$n" -v s="$secs" 'BEGIN { printf "%.0f", n / s }')"
    rec "$s" "$c" "$r" resumed "$(awk -v a="$resumed" -v b="$full" 'BEGIN { printf "%.1f", a + b ? a / (a + b) * 100 : 0 }')"
    rec "$s" "$c" "$r" errors "$((failed + bad))"
    rec "$s" "$c" "$r" wait "$(awk -v w="$((w1 - w0))" -v s="$secs" 'BEGIN { printf "%.1f", w / 1e9 / s * 100 }')"
    rec_cpu "$s" "$c" "$r" "$n" "$secs" "$t0" "$t1"
    printf '  %-10s %6s handshakes/s  %s full, %s resumed  %s proxy CPU-µs each  errors %s\n' "$c" \
        "$(awk -v n="$n" -v s="$secs" 'BEGIN { printf "%.0f", n / s }')" "$full" "$resumed" \
        "$(awk -F'\t' -v s="$s" -v c="$c" -v r="$r" '$1 == s && $2 == c && $3 == r && $4 == "cpu" { print $5 }' "$results")" \
        "$((failed + bad))"
}

# --- run ----------------------------------------------------------------------------------------
taskset -c "$client_cpus" nginx -p "$work" -e "$work/backend.err" -c "$work/backend.conf" &
pids+=("$!")
backend_pid=$!
wait_port "$b1"; wait_port "$b2"; wait_port "$b3"; wait_port "$status_port"

started=$(date +%s)
loadavg_before=$(cut -d' ' -f1-3 /proc/loadavg)
echo "rounds $rounds, ${duration}s per closed-loop run (+${warmup}s warm-up), fixed rate $rate req/s for ${rate_duration}s, $idle_conns idle connections"
echo "contestants: ${contestants[*]}; CPUs: client+backend $client_cpus, 1-worker proxy $proxy_cpus, 2-worker proxy $both_cpus"
# A TLS scenario runs once per certificate, as a scenario of its own: tlsnew-ecdsa, tlsnew-rsa.
runs=()
for s in "${scenarios[@]}"; do
    case $s in
        tlsnew | tlsresume | tlska64 | tlsbig | h2tls) for k in "${tls_certs[@]}"; do runs+=("$s-$k"); done ;;
        *) runs+=("$s") ;;
    esac
done
skipped= # contestants that sat the TLS scenarios out, said once
for s in "${runs[@]}"; do
    n_rounds=$rounds
    case $s in # these vary little from one round to the next
        idle) n_rounds=${BENCH_IDLE_ROUNDS:-$((rounds < 3 ? rounds : 3))} ;;
        sys | sysclose | instr) n_rounds=${BENCH_SYS_ROUNDS:-1} ;;
    esac
    tls_kind=
    case $s in tls* | h2tls*) tls_kind=${s##*-} ;; esac
    for r in $(seq 1 "$n_rounds"); do
        echo "== $s, round $r/$n_rounds"
        for c in "${contestants[@]}"; do
            if case $c in lb-routes | lb-log | lb-json | nginx-log) true ;; *) false ;; esac \
                && [ "$s" != ka64 ] && [ "$s" != instr ]; then
                continue
            fi
            if [ "$c" = lb-before ] && case $s in ka64 | instr | close | sysclose) false ;; *) true ;; esac; then
                continue
            fi
            if case $c in lb-defer | haproxy-defer) true ;; *) false ;; esac \
                && [ "$s" != close ] && [ "$s" != sysclose ]; then
                continue
            fi
            if [ "$c" = lb-nospin ] && case $s in ka64 | close | rate | sysclose | tls* | h2tls*) false ;; *) true ;; esac; then
                continue
            fi
            if [ "$c" = lb-before ] && [ -z "${BENCH_BEFORE_BIN:-}" ]; then
                continue
            fi
            if [ "$s" = instr ]; then
                instr_run "$c" "$r"
                continue
            fi
            if [ -n "$tls_kind" ]; then
                case $c in
                    direct | relay | lb | lb-2 | lb-nospin)
                        if case $c in direct | relay) true ;; *) [ "$lb_tls" = 0 ] ;; esac; then
                            case " $skipped " in
                                *" $c "*) ;;
                                *) echo "  $c: no TLS, sits the TLS scenarios out"; skipped="$skipped $c" ;;
                            esac
                            continue
                        fi
                        ;;
                esac
            fi
            start_contestant "$c"
            [ -z "$tls_kind" ] || tls_probe "$c"
            case $s in
                ka64) closed_loop "$s" "$c" "$r" 64 / ;;
                ka256) closed_loop "$s" "$c" "$r" 256 / ;;
                close) closed_loop "$s" "$c" "$r" 64 / -H "Connection: close" ;;
                big) closed_loop "$s" "$c" "$r" 16 /1m ;;
                rate) rate_run "$c" "$r" ;;
                idle) idle_run "$c" "$r" ;;
                sys) sys_run "$s" "$c" "$r" ;;
                sysclose) sys_run "$s" "$c" "$r" -H "Connection: close" ;;
                tlsnew-*) tls_handshakes "$s" "$c" "$r" -new ;;
                tlsresume-*) tls_handshakes "$s" "$c" "$r" -reuse ;;
                tlska64-*) closed_loop "$s" "$c" "$r" 64 / ;;
                tlsbig-*) closed_loop "$s" "$c" "$r" 16 /1m ;;
                h2tls-*) h2_run "$s" "$c" "$r" ;;
                *) echo "unknown scenario $s" >&2; exit 2 ;;
            esac
            stop_contestant
        done
    done
done
tls_kind=
kill -0 "$backend_pid" 2>/dev/null || { echo "the backend died" >&2; exit 1; }
elapsed=$(($(date +%s) - started))

{
    echo
    echo "## Results"
    echo
    echo "$ncpu CPUs, $(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -n 1), Linux $(uname -r);" \
        "nginx $(nginx -v 2>&1 | sed 's/.*nginx\///'), HAProxy $(haproxy -v 2>/dev/null | awk 'NR == 1 { print $3 }')," \
        "$(wrk -v 2>&1 | awk 'NR == 1 { print $1, $2 }'), lb $(git rev-parse --short HEAD 2>/dev/null || echo '?')$([ "$tls" = 0 ] || echo ", $(openssl version | cut -d' ' -f1-2) (s_time, s_client, wrk's TLS), $tls_clients s_time processes")."
    echo "$rounds rounds, ${duration}s per closed-loop run after ${warmup}s of warm-up, fixed rate $rate req/s for ${rate_duration}s;" \
        "load average before: $loadavg_before, after: $(cut -d' ' -f1-3 /proc/loadavg); niceness ${BENCH_NICE:-0}; ran ${elapsed}s."
    echo "Ratios (×) are to HAProxy at the same worker count (direct: to 1-thread HAProxy); ↑ higher is better, ↓ lower."
    echo
} >"$work/header.md"
declare -p rounds duration warmup rate rate_duration idle_conns contestants >"$work/meta.sh"
{
    cat "$work/header.md"
    report
    negotiated "$work/negotiated.tsv"
    echo
    echo "## Targets (lb, one reactor, against nginx and HAProxy at one worker)"
    echo
    targets
} | tee "$work/report.md"
rm -rf "${out:?}/runs"
: >>"$work/negotiated.tsv"
: >>"$work/access-lines.tsv"
cp -r "$work/results.tsv" "$work/report.md" "$work/header.md" "$work/meta.sh" "$work/negotiated.tsv" "$work/access-lines.tsv" "$work/runs" "$out/"
cp "$work"/*.conf "$work"/*.cfg "$work"/*.toml "$work"/*.err "$work"/*.log "$out/" 2>/dev/null || true
echo
echo "raw outputs, configurations and results.tsv: $out/"
