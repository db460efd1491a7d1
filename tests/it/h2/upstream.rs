//! HTTP/2 to backends at the protocol level, against `tests/h2/h2_backend.py` (Python h2):
//! a refused stream and a GOAWAY are retried without losing the request, whatever its method;
//! streams beyond the backend's concurrency wait their turn on the one connection; 64 MiB each
//! way under flow control in bounded memory; a backend's field that would split an HTTP/1 line
//! never reaches the client; HTTP/1.1 clients get the backend's trailers in a chunked answer.

use std::io::Write;
use std::process::Command;
use std::time::Duration;

use super::backends::{lb_for, PyServer};
use crate::support::*;
use crate::tls::{parse_response, run_with_deadline};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/h2/h2_backend.py");
const DEADLINE: Duration = Duration::from_secs(120);

fn h2_backend(args: &[&str]) -> PyServer {
    PyServer::start(SCRIPT, args)
}

/// What the backend answered, by its request lines: `req METHOD PATH BYTES`.
fn requests(b: &PyServer) -> Vec<String> {
    b.lines()
        .into_iter()
        .filter_map(|l| l.strip_prefix("req ").map(str::to_string))
        .collect()
}

fn curl(args: &[&str], url: &str) -> (Response, Vec<u8>) {
    let out = run_with_deadline(
        Command::new("curl")
            .args(["-sS", "--max-time", "100", "-D", "-"])
            .args(args)
            .arg(url),
        b"",
        DEADLINE,
    );
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (parse_response(&out.stdout), out.stdout)
}

#[test]
fn a_refused_stream_goes_to_another_backend_even_for_a_post() {
    let refuser = h2_backend(&["no", "--refuse-all"]);
    let good = h2_backend(&["yes"]);
    let lb = lb_for(&[("no", refuser.addr), ("yes", good.addr)], "");
    // Within the request buffer: the copy kept for a resend. (A larger body's copy makes way for
    // the rest of the body, and then a refusal is answered 502.)
    let body: Vec<u8> = pattern(10_000);
    let sum: u64 = body.iter().map(|&b| u64::from(b)).sum();
    let file = temp_file("h2-refused-body", "");
    std::fs::write(&file, &body).expect("write body");
    for _ in 0..4 {
        let (resp, _) = curl(
            &[
                "--http1.1",
                "--data-binary",
                &format!("@{}", file.display()),
            ],
            &format!("http://{}/upload", lb.plain()),
        );
        assert_eq!(resp.status, 200, "{}", resp.text());
        // curl -D - writes the trailer after the body.
        assert_eq!(
            resp.text(),
            format!("yes POST /upload 10000 {sum}x-sum: {sum}\r\n"),
            "the whole body reached the backend that took it"
        );
    }
    wait_until("a refusal", || {
        refuser.lines().iter().any(|l| l.contains("refused"))
    });
    // No request was answered twice, and none by the refusing backend.
    let posts = || {
        requests(&good)
            .into_iter()
            .filter(|r| r.starts_with("POST"))
            .count()
    };
    wait_until("four requests answered", || posts() >= 4);
    assert_eq!(posts(), 4, "{:?}", requests(&good));
}

#[test]
fn a_goaway_sends_the_unprocessed_stream_on_a_new_connection() {
    let b = h2_backend(&["b"]);
    let lb = lb_for(&[("b", b.addr)], "");
    let (resp, _) = curl(
        &["--http1.1", "-X", "POST", "--data", "x=1"],
        &format!("http://{}/goaway", lb.plain()),
    );
    assert_eq!(resp.status, 200, "{}", resp.text());
    let sum: u32 = b"x=1".iter().map(|&c| u32::from(c)).sum();
    assert_eq!(
        resp.text(),
        format!("b POST /goaway 3 {sum}x-sum: {sum}\r\n")
    );
    let lines = b.lines();
    let goaway = lines.iter().position(|l| l.ends_with("goaway"));
    let answered = lines.iter().position(|l| l == "req POST /goaway 3");
    assert!(
        matches!((goaway, answered), (Some(g), Some(a)) if g < a),
        "{lines:?}"
    );
    // The request went out again on a connection opened after the GOAWAY.
    let conns_before_answer = lines[..answered.unwrap_or(0)]
        .iter()
        .filter(|l| *l == "conn")
        .count();
    assert!(conns_before_answer >= 2, "{lines:?}");
}

#[test]
fn streams_beyond_the_backends_concurrency_wait_their_turn_on_one_connection() {
    let b = h2_backend(&["b", "--max-streams", "4"]);
    let lb = lb_for(&[("b", b.addr)], "");
    let urls: Vec<String> = (0..50)
        .map(|i| format!("http://{}/n/{i}", lb.plain()))
        .collect();
    let out = run_with_deadline(
        Command::new("nghttp")
            .args(["-n", "-s", "-m", "1"])
            .args(&urls),
        b"",
        DEADLINE,
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "nghttp: {text}");
    // 50 answered (nghttp -s prints one line per finished stream, with its status).
    let answered = text.lines().filter(|l| l.contains(" 200 ")).count();
    assert_eq!(answered, 50, "{text}");
    wait_until("50 requests answered", || requests(&b).len() >= 50);
    // lb opened one connection for its traffic (besides the health probe's at its start).
    let conns = b.lines().iter().filter(|l| *l == "conn").count();
    assert!(conns <= 2, "{:?}", b.lines());
}

#[test]
fn sixty_four_mib_each_way_pass_under_flow_control_in_bounded_memory() {
    const N: usize = 64 << 20;
    let b = h2_backend(&["b"]);
    let lb = lb_for(&[("b", b.addr)], "");
    // Download: HTTP/2 on both sides.
    let out = run_with_deadline(
        Command::new("curl")
            .args(["-sS", "--max-time", "100", "--http2-prior-knowledge"])
            .arg(format!("http://{}/bytes/{N}", lb.plain())),
        b"",
        DEADLINE,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout.len(), N);
    assert!(
        out.stdout == pattern(N),
        "the bytes arrive in order, unchanged"
    );
    // Upload: an HTTP/1.1 client, chunked (no length), to the HTTP/2 backend.
    let body = pattern(N);
    let sum: u64 = body.iter().map(|&c| u64::from(c)).sum::<u64>() % (1 << 32);
    let file = temp_file("h2-upload-64m", "");
    std::fs::write(&file, &body).expect("write");
    let (resp, _) = curl(
        &[
            "--http1.1",
            "-H",
            "Transfer-Encoding: chunked",
            "--data-binary",
            &format!("@{}", file.display()),
        ],
        &format!("http://{}/up", lb.plain()),
    );
    assert_eq!(resp.text(), format!("b POST /up {N} {sum}x-sum: {sum}\r\n"));
    let peak = lb.process.peak_rss_kib();
    assert!(
        peak < 64 * 1024,
        "lb's peak RSS {peak} KiB for 64 MiB each way"
    );
}

#[test]
fn a_backend_field_with_crlf_is_refused_and_never_reaches_the_client() {
    let b = h2_backend(&["b"]);
    let lb = lb_for(&[("b", b.addr)], "");
    let mut s = connect(lb.plain());
    s.write_all(b"GET /header-crlf HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    let resp = read_response(&mut s, false);
    assert_eq!(resp.status, 502, "{}", resp.text());
    assert!(resp.header("x-evil").is_none());
    // The connection and the backend are fine for the next request.
    s.write_all(b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    let resp = read_response(&mut s, false);
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("x-backend"), Some("b"));
}

#[test]
fn an_http1_client_gets_the_backends_trailers_in_a_chunked_answer() {
    let b = h2_backend(&["b"]);
    let lb = lb_for(&[("b", b.addr)], "");
    let (resp, raw) = curl(
        &["--http1.1", "--raw", "-H", "TE: trailers"],
        &format!("http://{}/t", lb.plain()),
    );
    assert_eq!(resp.status, 200);
    let raw = String::from_utf8_lossy(&raw);
    assert!(raw.contains("transfer-encoding: chunked"), "{raw}");
    assert!(raw.contains("b GET /t 0 0"), "{raw}");
    assert!(raw.contains("\r\n0\r\nx-sum: 0\r\n\r\n"), "{raw}");
}
