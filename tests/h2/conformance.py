#!/usr/bin/env python3
"""An h2spec-like conformance and flood suite for lb's HTTP/2 (RFC 9113, RFC 7541).

Usage:
    python3 tests/h2/conformance.py HOST PORT [CASE...]
    python3 tests/h2/conformance.py --list
    python3 tests/h2/conformance.py --markdown HOST PORT [CASE...]

HOST:PORT is an lb listener with cleartext HTTP/2 by prior knowledge (`[http2] h2c = true`),
whose backend answers GET / with 200 and POST /echo with the request echoed (lb's demo
backend). Each case opens its own connection, sends the preface and SETTINGS, does its
thing, and checks the server's answer: a GOAWAY with an error code (a connection error; the
connection closing after it is expected), a RST_STREAM with an error code on a stream (a
stream error), or a response. Prints `PASS id` or `FAIL id: reason` per case and a summary;
the exit status is 1 if any case failed. `--list` prints `id<TAB>section<TAB>description` for
every case; `--markdown` runs the cases and prints docs/HTTP2.md's conformance table.

Frames are built by hand (struct) so that malformed ones can be sent; HPACK blocks come from
the `hpack` package that comes with hyper-h2.
"""

import socket
import struct
import sys
import time

import hpack

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
TIMEOUT = 5.0

DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, \
    CONTINUATION = range(10)
END_STREAM = ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20

S_HEADER_TABLE_SIZE, S_ENABLE_PUSH, S_MAX_CONCURRENT_STREAMS, S_INITIAL_WINDOW_SIZE, \
    S_MAX_FRAME_SIZE, S_MAX_HEADER_LIST_SIZE = range(1, 7)

CODES = {
    0x0: "NO_ERROR", 0x1: "PROTOCOL_ERROR", 0x2: "INTERNAL_ERROR", 0x3: "FLOW_CONTROL_ERROR",
    0x4: "SETTINGS_TIMEOUT", 0x5: "STREAM_CLOSED", 0x6: "FRAME_SIZE_ERROR",
    0x7: "REFUSED_STREAM", 0x8: "CANCEL", 0x9: "COMPRESSION_ERROR", 0xa: "CONNECT_ERROR",
    0xb: "ENHANCE_YOUR_CALM", 0xc: "INADEQUATE_SECURITY", 0xd: "HTTP_1_1_REQUIRED",
}
CODE = {name: code for code, name in CODES.items()}
TYPES = {0: "DATA", 1: "HEADERS", 2: "PRIORITY", 3: "RST_STREAM", 4: "SETTINGS",
         5: "PUSH_PROMISE", 6: "PING", 7: "GOAWAY", 8: "WINDOW_UPDATE", 9: "CONTINUATION"}


class Fail(Exception):
    pass


def code_name(code):
    return CODES.get(code, hex(code))


def frame(kind, flags, stream, payload=b""):
    """A frame: 24-bit length, type, flags, 31-bit stream id (reserved bit as given)."""
    return struct.pack(">I", len(payload))[1:] + struct.pack(">BBI", kind, flags, stream) + payload


def settings(*pairs, ack=False, stream=0):
    payload = b"".join(struct.pack(">HI", k, v) for k, v in pairs)
    return frame(SETTINGS, ACK if ack else 0, stream, payload)


def ping(data=b"h2spec!!", ack=False, stream=0):
    return frame(PING, ACK if ack else 0, stream, data)


def rst(stream, code):
    return frame(RST_STREAM, 0, stream, struct.pack(">I", code))


def window_update(stream, increment):
    return frame(WINDOW_UPDATE, 0, stream, struct.pack(">I", increment))


def data(stream, payload, end=False, flags=0):
    return frame(DATA, flags | (END_STREAM if end else 0), stream, payload)


def goaway(last, code, stream=0):
    return frame(GOAWAY, 0, stream, struct.pack(">II", last, code))


def priority(stream, depends=0, weight=15, length=5):
    return frame(PRIORITY, 0, stream, struct.pack(">IB", depends, weight)[:length])


class Conn:
    """One client connection: frames out, frames in (server SETTINGS acknowledged, header
    blocks decoded in order so the HPACK tables stay in step)."""

    def __init__(self, host, port, first_settings=(), preface=True):
        self.sock = socket.create_connection((host, port), timeout=TIMEOUT)
        self.sock.settimeout(TIMEOUT)
        self.buf = b""
        self.closed = False
        self.encoder = hpack.Encoder()
        self.decoder = hpack.Decoder()
        self.decoder.max_header_list_size = 1 << 24
        self.block = None  # (stream, flags, bytes) of a header block being received
        self.server_settings = {}
        self.authority = "%s:%d" % (host, port)
        if preface:
            self.send(PREFACE + settings(*first_settings))

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, raw):
        try:
            self.sock.sendall(raw)
        except (BrokenPipeError, ConnectionResetError):
            # The server may close first (after its GOAWAY); what it sent is still read.
            pass

    def headers_block(self, headers, huffman=True):
        return self.encoder.encode(headers, huffman=huffman)

    def request_headers(self, method="GET", path="/", extra=()):
        return [(":method", method), (":scheme", "http"), (":path", path),
                (":authority", self.authority)] + list(extra)

    def headers(self, stream, headers=None, end_stream=True, end_headers=True, flags=0,
                block=None):
        if block is None:
            block = self.headers_block(headers if headers is not None else self.request_headers())
        f = flags | (END_STREAM if end_stream else 0) | (END_HEADERS if end_headers else 0)
        return frame(HEADERS, f, stream, block)

    def get(self, stream, path="/"):
        self.send(self.headers(stream, self.request_headers("GET", path)))

    def read_frame(self, timeout=TIMEOUT):
        """The next frame as (type, flags, stream, payload), or None once the server closed.
        Raises Fail on a timeout."""
        deadline = time.monotonic() + timeout
        while True:
            if len(self.buf) >= 9:
                length = int.from_bytes(self.buf[:3], "big")
                if len(self.buf) >= 9 + length:
                    kind, flags, stream = struct.unpack(">BBI", self.buf[3:9])
                    payload = self.buf[9:9 + length]
                    self.buf = self.buf[9 + length:]
                    f = (kind, flags, stream & 0x7FFFFFFF, payload)
                    self.on_frame(f)
                    return f
            if self.closed:
                return None
            left = deadline - time.monotonic()
            if left <= 0:
                raise Fail("timed out waiting for the server")
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                raise Fail("timed out waiting for the server")
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                self.closed = True
            self.buf += chunk

    def on_frame(self, f):
        kind, flags, stream, payload = f
        if kind == SETTINGS and not flags & ACK:
            for i in range(0, len(payload) - len(payload) % 6, 6):
                k, v = struct.unpack(">HI", payload[i:i + 6])
                self.server_settings[k] = v
            self.send(settings(ack=True))

    def frames(self, timeout=TIMEOUT):
        """Frames until the server closes (None ends the iteration)."""
        while True:
            f = self.read_frame(timeout)
            if f is None:
                return
            yield f

    def decode_block(self, flags, payload):
        if flags & PADDED:
            pad = payload[0]
            payload = payload[1:len(payload) - pad]
        if flags & PRIORITY_FLAG:
            payload = payload[5:]
        return payload

    # ---- expectations ----------------------------------------------------------------------

    def expect_goaway(self, code, close=True, rst_ok=()):
        """A connection error: GOAWAY with `code` (then, with `close`, the connection closed);
        RST_STREAM frames with a code in `rst_ok` may come first."""
        for kind, flags, stream, payload in self.frames():
            if kind == GOAWAY:
                last, got = struct.unpack(">II", payload[:8])
                if got != code:
                    raise Fail("GOAWAY %s (%r), expected %s" % (
                        code_name(got), payload[8:], code_name(code)))
                if close:
                    self.expect_close()
                return last & 0x7FFFFFFF
            if kind == RST_STREAM:
                got = struct.unpack(">I", payload)[0]
                if got in rst_ok:
                    continue
                raise Fail("RST_STREAM %s on stream %d, expected GOAWAY %s" % (
                    code_name(got), stream, code_name(code)))
        raise Fail("connection closed without GOAWAY, expected GOAWAY %s" % code_name(code))

    def expect_close(self):
        for kind, _, _, _ in self.frames():
            if kind not in (GOAWAY, PING, SETTINGS, WINDOW_UPDATE, DATA, HEADERS, RST_STREAM):
                raise Fail("unexpected frame type %d after GOAWAY" % kind)

    def expect_rst(self, sid, code, connection_ok=False):
        """A stream error: RST_STREAM `code` on `sid` (or, with `connection_ok`, GOAWAY
        `code`, which RFC 9113 §5.4 allows in place of a stream error)."""
        for kind, flags, stream, payload in self.frames():
            if kind == RST_STREAM and stream == sid:
                got = struct.unpack(">I", payload)[0]
                if got != code:
                    raise Fail("RST_STREAM %s on stream %d, expected %s" % (
                        code_name(got), sid, code_name(code)))
                return "stream"
            if kind == GOAWAY:
                got = struct.unpack(">I", payload[4:8])[0]
                if connection_ok and got == code:
                    return "connection"
                raise Fail("GOAWAY %s (%r), expected RST_STREAM %s on stream %d" % (
                    code_name(got), payload[8:], code_name(code), sid))
        raise Fail("connection closed, expected RST_STREAM %s on stream %d" % (
            code_name(code), sid))

    def expect_response(self, sid, window_updates=False):
        """The response on `sid`: (status, headers, body)."""
        headers, body = None, b""
        for kind, flags, stream, payload in self.frames():
            if kind == GOAWAY:
                got = struct.unpack(">I", payload[4:8])[0]
                raise Fail("GOAWAY %s (%r) before the response on stream %d" % (
                    code_name(got), payload[8:], sid))
            if kind == RST_STREAM and stream == sid:
                got = struct.unpack(">I", payload)[0]
                raise Fail("RST_STREAM %s on stream %d, expected a response" % (
                    code_name(got), sid))
            if kind in (HEADERS, CONTINUATION):
                if kind == HEADERS:
                    self.block = (stream, flags, self.decode_block(flags, payload))
                else:
                    s, f, b = self.block
                    self.block = (s, f | flags, b + payload)
                if flags & END_HEADERS:
                    s, f, b = self.block
                    self.block = None
                    decoded = self.decoder.decode(b, raw=True)
                    if s == sid:
                        if headers is None:
                            headers = decoded
                        if f & END_STREAM:
                            break
                continue
            if kind == DATA and stream == sid:
                if flags & PADDED:
                    payload = payload[1:len(payload) - payload[0]]
                body += payload
                if window_updates and payload:
                    self.send(window_update(0, len(payload)) + window_update(sid, len(payload)))
                if flags & END_STREAM:
                    break
        else:
            raise Fail("connection closed before the response on stream %d ended" % sid)
        if headers is None:
            raise Fail("no HEADERS on stream %d" % sid)
        status = dict(headers).get(b":status", b"").decode()
        return status, headers, body

    def expect_status(self, sid, status="200"):
        got, headers, body = self.expect_response(sid)
        if got != status:
            raise Fail(":status %s on stream %d, expected %s" % (got, sid, status))
        return headers, body

    def expect_ping_ack(self, payload=b"h2spec!!"):
        """The PING with `payload` answered: the connection is still fine."""
        for kind, flags, stream, p in self.frames():
            if kind == GOAWAY:
                got = struct.unpack(">I", p[4:8])[0]
                raise Fail("GOAWAY %s (%r), expected the connection to carry on" % (
                    code_name(got), p[8:]))
            if kind == RST_STREAM:
                got = struct.unpack(">I", p)[0]
                raise Fail("RST_STREAM %s on stream %d, expected nothing" % (
                    code_name(got), stream))
            if kind == PING and flags & ACK:
                if p != payload:
                    raise Fail("PING ACK with %r, expected %r" % (p, payload))
                return
        raise Fail("connection closed, expected a PING ACK")

    def sync(self):
        """Reads until the server's SETTINGS and its ACK of ours are in (our ACK sent)."""
        seen, acked = False, False
        while not (seen and acked):
            f = self.read_frame()
            if f is None:
                raise Fail("connection closed")
            if f[0] == SETTINGS:
                if f[1] & ACK:
                    acked = True
                else:
                    seen = True

    def has_goaway(self):
        """Whether the bytes read so far hold a GOAWAY (without consuming them)."""
        b = self.buf
        while len(b) >= 9:
            length = int.from_bytes(b[:3], "big")
            if b[3] == GOAWAY:
                return True
            b = b[9 + length:]
        return False

    def alive(self):
        """Sends a PING and expects its ACK."""
        self.send(ping(b"alive?!!"))
        self.expect_ping_ack(b"alive?!!")


# ---- the cases ---------------------------------------------------------------------------------

CASES = []


def case(cid, section, sent, expected, preface=True):
    """Registers a case; without `preface`, it sends its own connection preface."""
    def register(fn):
        CASES.append((cid, section, sent, expected, fn if preface else raw(fn)))
        return fn
    return register


def raw(fn):
    fn.raw = True
    return fn


def connection_error(code_name_, make_frames, first_settings=()):
    """A case body: send what `make_frames(conn)` returns, expect GOAWAY `code_name_`."""
    def run(c):
        c.send(make_frames(c))
        c.expect_goaway(CODE[code_name_])
    return run


def stream_error(sid, code_name_, make_frames, connection_ok=False):
    def run(c):
        c.send(make_frames(c))
        c.expect_rst(sid, CODE[code_name_], connection_ok)
    return run


def post_open(c, sid, path="/echo", extra=()):
    """HEADERS opening a POST whose body is still to come."""
    return c.headers(sid, c.request_headers("POST", path, extra), end_stream=False)


def simple(cid, section, sent, expected, body):
    CASES.append((cid, section, sent, expected, body))


def malformed(cid, section, sent, headers_of):
    """A request whose header list is malformed (RFC 9113 §8.1.1): RST_STREAM PROTOCOL_ERROR."""
    simple(cid, section, sent, "RST_STREAM PROTOCOL_ERROR",
           stream_error(1, "PROTOCOL_ERROR", lambda c: c.headers(1, headers_of(c))))


# §3.5 Connection preface

@case("preface-invalid", "3.5", "a connection preface with a wrong magic",
      "GOAWAY PROTOCOL_ERROR or the connection closed", preface=False)
def _(c):
    c.send(b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n" + settings())
    # lb may take it for an HTTP/1 request and answer it so: only the close is required.
    deadline = time.monotonic() + TIMEOUT
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise Fail("connection still open")
        c.sock.settimeout(left)
        try:
            chunk = c.sock.recv(65536)
        except socket.timeout:
            raise Fail("connection still open")
        except ConnectionResetError:
            return
        if not chunk:
            return


@case("preface-not-settings", "3.5", "the preface followed by a PING, not SETTINGS",
      "GOAWAY PROTOCOL_ERROR", preface=False)
def _(c):
    c.send(PREFACE + ping())
    c.expect_goaway(CODE["PROTOCOL_ERROR"])


@case("settings-exchange", "3.5", "the preface and SETTINGS",
      "the server's SETTINGS, then an ACK of ours")
def _(c):
    seen_settings = False
    for kind, flags, stream, payload in c.frames():
        if kind == SETTINGS and not flags & ACK:
            seen_settings = True
        elif kind == SETTINGS and flags & ACK:
            if not seen_settings:
                raise Fail("SETTINGS ACK before the server's own SETTINGS")
            return
        elif kind == GOAWAY:
            raise Fail("GOAWAY")
    raise Fail("connection closed")


# §4.1 Frame format

simple("frame-unknown-type", "4.1", "a frame of unknown type 0xff, then PING",
       "ignored: PING ACK",
       lambda c: (c.send(frame(0xFF, 0, 0, b"ignore me") + ping()), c.expect_ping_ack()))
simple("frame-unknown-flags", "4.1", "PING with unknown flags 0x16 (ACK unset)",
       "PING ACK, flags ignored",
       lambda c: (c.send(frame(PING, 0x16, 0, b"h2spec!!")), c.expect_ping_ack()))
simple("frame-reserved-bit", "4.1", "HEADERS GET / with the stream id's reserved bit set",
       "ignored: :status 200 on the stream",
       lambda c: (c.send(c.headers(0x80000001)), c.expect_status(1)))
simple("headers-unknown-flags", "4.1", "HEADERS GET / with unknown flags 0xd2 as well",
       ":status 200",
       lambda c: (c.send(c.headers(1, flags=0xD2 & ~(PADDED | PRIORITY_FLAG))),
                  c.expect_status(1)))

# §4.2 Frame size

simple("data-too-large", "4.2", "DATA of 16385 bytes (above SETTINGS_MAX_FRAME_SIZE 16384)",
       "FRAME_SIZE_ERROR (GOAWAY or RST_STREAM)",
       stream_error(1, "FRAME_SIZE_ERROR",
                    lambda c: post_open(c, 1) + data(1, b"x" * 16385), connection_ok=True))
simple("headers-too-large", "4.2", "a HEADERS frame of 16385 bytes",
       "GOAWAY FRAME_SIZE_ERROR",
       connection_error("FRAME_SIZE_ERROR", lambda c: c.headers(
           1, block=c.headers_block(c.request_headers(extra=[("x-big", "a" * 17000)]),
                                    huffman=False)[:16385])))

# §4.3 Header compression

simple("hpack-index-zero", "4.3", "a header block with indexed field 0",
       "GOAWAY COMPRESSION_ERROR",
       connection_error("COMPRESSION_ERROR", lambda c: c.headers(1, block=b"\x80")))
simple("hpack-index-out-of-range", "4.3", "a header block indexing entry 200 of an empty table",
       "GOAWAY COMPRESSION_ERROR",
       connection_error("COMPRESSION_ERROR", lambda c: c.headers(1, block=b"\x82\x86\xff\x49")))
simple("hpack-truncated", "4.3", "a header block ending inside a literal",
       "GOAWAY COMPRESSION_ERROR",
       connection_error("COMPRESSION_ERROR",
                        lambda c: c.headers(1, block=b"\x82\x86\x84\x40\x0aabc")))
simple("hpack-huffman-eos", "4.3", "a Huffman string holding the EOS symbol",
       "GOAWAY COMPRESSION_ERROR",
       connection_error("COMPRESSION_ERROR",
                        lambda c: c.headers(1, block=b"\x82\x86\x84\x40\x01a\x84\xff\xff\xff\xff")))
simple("hpack-table-size-too-large", "4.3",
       "a dynamic table size update to 8192 (above SETTINGS_HEADER_TABLE_SIZE 4096)",
       "GOAWAY COMPRESSION_ERROR",
       connection_error("COMPRESSION_ERROR",
                        lambda c: c.headers(1, block=b"\x3f\xe1\x3f\x82\x86\x84")))
simple("hpack-table-size-at-end", "4.3",
       "a dynamic table size update at the end of a header block (RFC 7541 §4.2)",
       "GOAWAY COMPRESSION_ERROR",
       connection_error("COMPRESSION_ERROR",
                        lambda c: c.headers(1, block=c.headers_block(c.request_headers())
                                            + b"\x3f\xe1\x1f")))
simple("hpack-table-size-update-ok", "4.3",
       "a dynamic table size update to 0 at the start of a block, then a request",
       ":status 200",
       lambda c: (c.send(c.headers(1, block=b"\x20" + c.headers_block(c.request_headers()))),
                  c.expect_status(1)))

# §5.1 Stream states


def after_response(c):
    c.get(1)
    c.expect_status(1)


simple("idle-data", "5.1", "DATA on idle stream 1", "GOAWAY PROTOCOL_ERROR",
       connection_error("PROTOCOL_ERROR", lambda c: data(1, b"test")))
simple("idle-window-update", "5.1", "WINDOW_UPDATE on idle stream 1", "GOAWAY PROTOCOL_ERROR",
       connection_error("PROTOCOL_ERROR", lambda c: window_update(1, 100)))
simple("idle-continuation", "5.1", "CONTINUATION on idle stream 1", "GOAWAY PROTOCOL_ERROR",
       connection_error("PROTOCOL_ERROR",
                        lambda c: frame(CONTINUATION, END_HEADERS, 1,
                                        c.headers_block(c.request_headers()))))
simple("idle-priority-ok", "5.1", "PRIORITY on idle stream 3, then GET on stream 3",
       ":status 200",
       lambda c: (c.send(priority(3, 0) + c.headers(3)), c.expect_status(3)))
simple("half-closed-remote-data", "5.1",
       "HEADERS with END_STREAM, then DATA on the same stream",
       "STREAM_CLOSED (RST_STREAM or GOAWAY)",
       stream_error(1, "STREAM_CLOSED", lambda c: c.headers(1) + data(1, b"test"),
                    connection_ok=True))
simple("half-closed-remote-headers", "5.1",
       "HEADERS with END_STREAM, then HEADERS again on the same stream",
       "STREAM_CLOSED (RST_STREAM or GOAWAY)",
       stream_error(1, "STREAM_CLOSED", lambda c: c.headers(1) + c.headers(1),
                    connection_ok=True))
simple("closed-data-after-rst", "5.1",
       "POST opened, RST_STREAM CANCEL from the client, then DATA on it",
       "STREAM_CLOSED (RST_STREAM or GOAWAY)",
       stream_error(1, "STREAM_CLOSED",
                    lambda c: post_open(c, 1) + rst(1, CODE["CANCEL"]) + data(1, b"late"),
                    connection_ok=True))
simple("closed-headers-after-rst", "5.1",
       "POST opened, RST_STREAM CANCEL from the client, then HEADERS on it",
       "STREAM_CLOSED (RST_STREAM or GOAWAY)",
       stream_error(1, "STREAM_CLOSED",
                    lambda c: post_open(c, 1) + rst(1, CODE["CANCEL"]) + c.headers(1),
                    connection_ok=True))
simple("closed-data-after-end", "5.1",
       "GET answered in full, then DATA on its stream",
       "STREAM_CLOSED (RST_STREAM or GOAWAY)",
       lambda c: (after_response(c), c.send(data(1, b"late")),
                  c.expect_rst(1, CODE["STREAM_CLOSED"], connection_ok=True)))
simple("closed-window-update-ok", "5.1",
       "GET answered in full, then WINDOW_UPDATE and PRIORITY on its stream",
       "ignored: PING ACK",
       lambda c: (after_response(c),
                  c.send(window_update(1, 100) + priority(1, 0) + ping()), c.expect_ping_ack()))

# §5.1.1 Stream identifiers

simple("stream-id-even", "5.1.1", "HEADERS on stream 2 (a server's id)",
       "GOAWAY PROTOCOL_ERROR",
       connection_error("PROTOCOL_ERROR", lambda c: c.headers(2)))
simple("stream-id-decreasing", "5.1.1", "HEADERS on stream 5, then on stream 3",
       "GOAWAY PROTOCOL_ERROR",
       connection_error("PROTOCOL_ERROR",
                        lambda c: post_open(c, 5, "/") + c.headers(3)))
@case("stream-id-reuse", "5.1.1", "GET on stream 1 answered, then HEADERS on stream 1 again",
      "STREAM_CLOSED or PROTOCOL_ERROR (GOAWAY or RST_STREAM)")
def _(c):
    after_response(c)
    c.send(c.headers(1))
    for kind, flags, stream, payload in c.frames():
        if kind == GOAWAY:
            got = struct.unpack(">I", payload[4:8])[0]
            if got in (CODE["STREAM_CLOSED"], CODE["PROTOCOL_ERROR"]):
                return
            raise Fail("GOAWAY %s" % code_name(got))
        if kind == RST_STREAM and stream == 1:
            got = struct.unpack(">I", payload)[0]
            if got in (CODE["STREAM_CLOSED"], CODE["PROTOCOL_ERROR"]):
                return
            raise Fail("RST_STREAM %s" % code_name(got))
        if kind == HEADERS and stream == 1:
            raise Fail("a second response on a closed stream")
    raise Fail("connection closed without an error")

# §5.1.2 Stream concurrency


@case("max-concurrent-streams", "5.1.2",
      "SETTINGS_MAX_CONCURRENT_STREAMS + 1 streams opened (POSTs whose bodies never come)",
      "RST_STREAM REFUSED_STREAM (or PROTOCOL_ERROR) on the one too many")
def _(c):
    # The limit comes in the server's SETTINGS, its first frame.
    while S_MAX_CONCURRENT_STREAMS not in c.server_settings:
        if c.read_frame() is None:
            raise Fail("connection closed")
    limit = c.server_settings[S_MAX_CONCURRENT_STREAMS]
    if limit > 1000:
        raise Fail("SETTINGS_MAX_CONCURRENT_STREAMS %d: too many to test" % limit)
    out = b"".join(post_open(c, 2 * i + 1, "/") for i in range(limit + 1))
    c.send(out)
    last = 2 * limit + 1
    for kind, flags, stream, payload in c.frames():
        if kind == RST_STREAM:
            got = struct.unpack(">I", payload)[0]
            if stream != last:
                raise Fail("RST_STREAM %s on stream %d, within the limit" % (
                    code_name(got), stream))
            if got not in (CODE["REFUSED_STREAM"], CODE["PROTOCOL_ERROR"]):
                raise Fail("RST_STREAM %s on stream %d" % (code_name(got), stream))
            return
        if kind == GOAWAY:
            got = struct.unpack(">I", payload[4:8])[0]
            if got != CODE["PROTOCOL_ERROR"]:
                raise Fail("GOAWAY %s" % code_name(got))
            return
    raise Fail("connection closed")


# §5.3 Priority

simple("priority-self-dependency", "5.3.1", "PRIORITY making stream 1 depend on itself",
       "RST_STREAM PROTOCOL_ERROR",
       stream_error(1, "PROTOCOL_ERROR", lambda c: priority(1, 1)))
simple("headers-self-dependency", "5.3.1",
       "HEADERS with the PRIORITY flag making stream 1 depend on itself",
       "RST_STREAM PROTOCOL_ERROR",
       stream_error(1, "PROTOCOL_ERROR", lambda c: c.headers(
           1, flags=PRIORITY_FLAG,
           block=struct.pack(">IB", 1, 15) + c.headers_block(c.request_headers()))))

# §5.4.1 Connection error handling


@case("goaway-then-close", "5.4.1",
      "GET on stream 1 answered, then a PING on stream 1 (a connection error)",
      "GOAWAY PROTOCOL_ERROR naming stream 1 as the last, then the connection closed")
def _(c):
    after_response(c)
    c.send(ping(stream=1))
    last = c.expect_goaway(CODE["PROTOCOL_ERROR"], close=True)
    if last != 1:
        raise Fail("GOAWAY last-stream-id %d, expected 1" % last)


# §5.5 Extending HTTP/2

simple("extension-frame-ignored", "5.5", "an unknown extension frame (type 0x16) on stream 0",
       "ignored: PING ACK",
       lambda c: (c.send(frame(0x16, 0xFF, 0, b"\x00" * 16) + ping()), c.expect_ping_ack()))
simple("extension-frame-in-header-block", "5.5",
       "HEADERS without END_HEADERS, then an unknown frame, then CONTINUATION",
       "GOAWAY PROTOCOL_ERROR",
       connection_error("PROTOCOL_ERROR", lambda c: (
           lambda b: frame(HEADERS, END_STREAM, 1, b[:4]) + frame(0x16, 0, 0, b"x" * 8)
           + frame(CONTINUATION, END_HEADERS, 1, b[4:]))(c.headers_block(c.request_headers()))))

# §6.1 DATA

simple("data-stream-0", "6.1", "DATA on stream 0", "GOAWAY PROTOCOL_ERROR",
       connection_error("PROTOCOL_ERROR", lambda c: data(0, b"test")))
simple("data-padding-too-long", "6.1", "POST opened, DATA whose pad length exceeds the payload",
       "GOAWAY PROTOCOL_ERROR",
       connection_error("PROTOCOL_ERROR",
                        lambda c: post_open(c, 1) + frame(DATA, PADDED | END_STREAM, 1,
                                                          b"\x06test")))
@case("data-padded-ok", "6.1", "POST /echo with a padded DATA frame carrying `hello`",
      ":status 200, the body echoed without the padding")
def _(c):
    c.send(post_open(c, 1, "/echo", [("content-length", "5")])
           + frame(DATA, PADDED | END_STREAM, 1, b"\x07hello" + b"\x00" * 7))
    headers, body = c.expect_status(1)
    if not body.endswith(b"\r\n\r\nhello"):
        raise Fail("echoed body %r" % body[-40:])



# §6.2 HEADERS

simple("headers-stream-0", "6.2", "HEADERS on stream 0", "GOAWAY PROTOCOL_ERROR",
       connection_error("PROTOCOL_ERROR", lambda c: c.headers(0)))
simple("headers-padding-too-long", "6.2", "HEADERS whose pad length exceeds the payload",
       "GOAWAY PROTOCOL_ERROR",
       connection_error("PROTOCOL_ERROR", lambda c: c.headers(
           1, flags=PADDED, block=bytes([200]) + c.headers_block(c.request_headers()))))
simple("headers-padded-priority-ok", "6.2", "HEADERS GET / padded and with priority fields",
       ":status 200",
       lambda c: (c.send(c.headers(1, flags=PADDED | PRIORITY_FLAG, block=bytes([4])
                                   + struct.pack(">IB", 0, 200)
                                   + c.headers_block(c.request_headers()) + b"\x00" * 4)),
                  c.expect_status(1)))
simple("headers-then-data-in-block", "6.2",
       "HEADERS without END_HEADERS, then DATA on the same stream",
       "GOAWAY PROTOCOL_ERROR",
       connection_error("PROTOCOL_ERROR", lambda c: c.headers(
           1, c.request_headers("POST"), end_stream=False, end_headers=False) + data(1, b"x")))
simple("headers-then-headers-in-block", "6.2",
       "HEADERS without END_HEADERS on stream 1, then HEADERS on stream 3",
       "GOAWAY PROTOCOL_ERROR",
       connection_error("PROTOCOL_ERROR", lambda c: c.headers(1, end_headers=False)
                        + c.headers(3)))

# §6.3 PRIORITY

simple("priority-stream-0", "6.3", "PRIORITY on stream 0", "GOAWAY PROTOCOL_ERROR",
       connection_error("PROTOCOL_ERROR", lambda c: priority(0, 1)))
simple("priority-bad-length", "6.3", "PRIORITY of 4 bytes on stream 1",
       "RST_STREAM FRAME_SIZE_ERROR", stream_error(1, "FRAME_SIZE_ERROR",
                                                   lambda c: priority(1, 0, length=4)))
simple("priority-open-stream-ok", "6.3", "POST /echo opened, PRIORITY on it, then its body",
       ":status 200",
       lambda c: (c.send(post_open(c, 1) + priority(1, 0, 255) + data(1, b"x", end=True)),
                  c.expect_status(1)))

# §6.4 RST_STREAM

simple("rst-stream-0", "6.4", "RST_STREAM on stream 0", "GOAWAY PROTOCOL_ERROR",
       connection_error("PROTOCOL_ERROR", lambda c: rst(0, CODE["CANCEL"])))
simple("rst-stream-idle", "6.4", "RST_STREAM on idle stream 1", "GOAWAY PROTOCOL_ERROR",
       connection_error("PROTOCOL_ERROR", lambda c: rst(1, CODE["CANCEL"])))
simple("rst-stream-bad-length", "6.4", "POST opened, RST_STREAM of 3 bytes on it",
       "GOAWAY FRAME_SIZE_ERROR",
       connection_error("FRAME_SIZE_ERROR",
                        lambda c: post_open(c, 1) + frame(RST_STREAM, 0, 1, b"\x00\x00\x08")))

# §6.5 SETTINGS

simple("settings-ack-with-payload", "6.5", "SETTINGS with ACK and a 6-byte payload",
       "GOAWAY FRAME_SIZE_ERROR",
       connection_error("FRAME_SIZE_ERROR",
                        lambda c: frame(SETTINGS, ACK, 0, struct.pack(">HI", 3, 100))))
simple("settings-on-stream", "6.5", "SETTINGS on stream 1", "GOAWAY PROTOCOL_ERROR",
       connection_error("PROTOCOL_ERROR", lambda c: settings(stream=1)))
simple("settings-bad-length", "6.5", "SETTINGS with a 3-byte payload", "GOAWAY FRAME_SIZE_ERROR",
       connection_error("FRAME_SIZE_ERROR", lambda c: frame(SETTINGS, 0, 0, b"\x00\x03\x00")))
simple("settings-enable-push-2", "6.5.2", "SETTINGS_ENABLE_PUSH = 2", "GOAWAY PROTOCOL_ERROR",
       connection_error("PROTOCOL_ERROR", lambda c: settings((S_ENABLE_PUSH, 2))))
simple("settings-window-too-large", "6.5.2", "SETTINGS_INITIAL_WINDOW_SIZE = 2^31",
       "GOAWAY FLOW_CONTROL_ERROR",
       connection_error("FLOW_CONTROL_ERROR",
                        lambda c: settings((S_INITIAL_WINDOW_SIZE, 1 << 31))))
simple("settings-max-frame-too-small", "6.5.2", "SETTINGS_MAX_FRAME_SIZE = 16383",
       "GOAWAY PROTOCOL_ERROR",
       connection_error("PROTOCOL_ERROR", lambda c: settings((S_MAX_FRAME_SIZE, 16383))))
simple("settings-max-frame-too-large", "6.5.2", "SETTINGS_MAX_FRAME_SIZE = 2^24",
       "GOAWAY PROTOCOL_ERROR",
       connection_error("PROTOCOL_ERROR", lambda c: settings((S_MAX_FRAME_SIZE, 1 << 24))))


@case("settings-unknown-ignored", "6.5.2", "SETTINGS with unknown identifier 0xff",
      "ignored: SETTINGS ACK")
def _(c):
    # Our first SETTINGS is acknowledged first; this one's ACK is the second.
    c.send(settings((0xFF, 1)))
    acks = 0
    for kind, flags, stream, payload in c.frames():
        if kind == SETTINGS and flags & ACK:
            acks += 1
            if acks == 2:
                return
        if kind == GOAWAY:
            raise Fail("GOAWAY %s" % code_name(struct.unpack(">I", payload[4:8])[0]))
    raise Fail("connection closed")


@case("settings-ack-not-answered", "6.5.3", "an unsolicited SETTINGS ACK, then PING",
      "nothing but the PING ACK (no error)")
def _(c):
    c.send(settings(ack=True) + ping())
    c.expect_ping_ack()


# §6.7 PING

simple("ping-answered", "6.7", "PING with 8 bytes of data", "PING ACK with the same data",
       lambda c: (c.send(ping(b"\x01\x02\x03\x04\x05\x06\x07\x08")),
                  c.expect_ping_ack(b"\x01\x02\x03\x04\x05\x06\x07\x08")))
@case("ping-ack-not-answered", "6.7", "a PING with ACK set, then a PING",
      "only the second is acknowledged")
def _(c):
    c.send(ping(b"unsolic!", ack=True) + ping(b"solicit!"))
    c.expect_ping_ack(b"solicit!")


simple("ping-on-stream", "6.7", "PING on stream 1", "GOAWAY PROTOCOL_ERROR",
       connection_error("PROTOCOL_ERROR", lambda c: ping(stream=1)))
simple("ping-bad-length", "6.7", "PING with a 6-byte payload", "GOAWAY FRAME_SIZE_ERROR",
       connection_error("FRAME_SIZE_ERROR", lambda c: frame(PING, 0, 0, b"123456")))

# §6.8 GOAWAY

simple("goaway-on-stream", "6.8", "GOAWAY on stream 1", "GOAWAY PROTOCOL_ERROR",
       connection_error("PROTOCOL_ERROR", lambda c: goaway(0, 0, stream=1)))


@case("goaway-graceful", "6.8", "GET on stream 1, then GOAWAY NO_ERROR from the client",
      "stream 1 still answered (:status 200), then the connection closed")
def _(c):
    c.send(c.headers(1) + goaway(0, 0))
    c.expect_status(1)
    c.expect_close()


simple("goaway-too-short", "6.8", "GOAWAY with a 4-byte payload", "GOAWAY FRAME_SIZE_ERROR",
       connection_error("FRAME_SIZE_ERROR", lambda c: frame(GOAWAY, 0, 0, b"\x00\x00\x00\x00")))

# §6.6 PUSH_PROMISE (§8.4: a client cannot push)

simple("push-promise-from-client", "8.4", "PUSH_PROMISE from the client on stream 1",
       "GOAWAY PROTOCOL_ERROR",
       connection_error("PROTOCOL_ERROR", lambda c: post_open(c, 1, "/") + frame(
           PUSH_PROMISE, END_HEADERS, 1, struct.pack(">I", 2)
           + c.headers_block(c.request_headers()))))

# §6.9 WINDOW_UPDATE

simple("window-update-zero-conn", "6.9", "WINDOW_UPDATE of 0 on the connection",
       "GOAWAY PROTOCOL_ERROR",
       connection_error("PROTOCOL_ERROR", lambda c: window_update(0, 0)))
simple("window-update-zero-stream", "6.9", "POST opened, WINDOW_UPDATE of 0 on it",
       "RST_STREAM PROTOCOL_ERROR",
       stream_error(1, "PROTOCOL_ERROR", lambda c: post_open(c, 1) + window_update(1, 0)))
simple("window-update-bad-length", "6.9", "WINDOW_UPDATE with a 3-byte payload",
       "GOAWAY FRAME_SIZE_ERROR",
       connection_error("FRAME_SIZE_ERROR", lambda c: frame(WINDOW_UPDATE, 0, 0, b"\x00\x00\x01")))
simple("window-update-conn-overflow", "6.9.1",
       "WINDOW_UPDATE of 2^31-1 on the connection (window 65535)",
       "GOAWAY FLOW_CONTROL_ERROR",
       connection_error("FLOW_CONTROL_ERROR", lambda c: window_update(0, (1 << 31) - 1)))
simple("window-update-stream-overflow", "6.9.1",
       "POST opened, WINDOW_UPDATE of 2^31-1 on it (window 65535)",
       "RST_STREAM FLOW_CONTROL_ERROR",
       stream_error(1, "FLOW_CONTROL_ERROR",
                    lambda c: post_open(c, 1) + window_update(1, (1 << 31) - 1)))


@case("flow-control-window-1", "6.9.1",
      "SETTINGS_INITIAL_WINDOW_SIZE = 1, GET /bytes/100; WINDOW_UPDATE of 99 on the stream later",
      "one byte of DATA, no more until the WINDOW_UPDATE, then the other 99 and END_STREAM")
def _(c):
    c.send(settings((S_INITIAL_WINDOW_SIZE, 1)))
    c.get(1, "/bytes/100")
    got = b""
    for kind, flags, stream, payload in c.frames():
        if kind in (GOAWAY, RST_STREAM):
            raise Fail("%s" % TYPES[kind])
        if kind == DATA and stream == 1:
            got += payload
            if len(got) > 1:
                raise Fail("%d bytes of DATA sent in a window of 1" % len(got))
            if got:
                break
    else:
        raise Fail("connection closed")
    # Nothing more may come in a while (a PING round trip and a little more).
    c.send(ping())
    c.expect_ping_ack()
    try:
        f = c.read_frame(timeout=0.3)
        if f is not None and f[0] == DATA and f[3]:
            raise Fail("more DATA beyond the window")
    except Fail as e:
        if "timed out" not in str(e):
            raise
    c.send(window_update(1, 99))
    for kind, flags, stream, payload in c.frames():
        if kind == DATA and stream == 1:
            got += payload
            if flags & END_STREAM:
                if len(got) != 100:
                    raise Fail("%d bytes in all, expected 100" % len(got))
                return
        if kind in (GOAWAY, RST_STREAM):
            raise Fail(TYPES[kind])
    raise Fail("connection closed")


@case("flow-control-settings-change", "6.9.2",
      "SETTINGS_INITIAL_WINDOW_SIZE = 0, GET /bytes/10, then SETTINGS_INITIAL_WINDOW_SIZE = 10",
      "no DATA until the second SETTINGS, then the 10 bytes")
def _(c):
    c.send(settings((S_INITIAL_WINDOW_SIZE, 0)))
    c.get(1, "/bytes/10")
    for kind, flags, stream, payload in c.frames():
        if kind == DATA and payload:
            raise Fail("DATA in a window of 0")
        if kind in (GOAWAY, RST_STREAM):
            raise Fail(TYPES[kind])
        if kind == HEADERS and stream == 1:
            c.block = (stream, flags, payload)
            c.decoder.decode(payload)
            break
    else:
        raise Fail("connection closed")
    c.send(settings((S_INITIAL_WINDOW_SIZE, 10)))
    got = b""
    for kind, flags, stream, payload in c.frames():
        if kind == DATA and stream == 1:
            got += payload
            if flags & END_STREAM:
                if len(got) != 10:
                    raise Fail("%d bytes, expected 10" % len(got))
                return
        if kind in (GOAWAY, RST_STREAM):
            raise Fail(TYPES[kind])
    raise Fail("connection closed")


simple("settings-window-overflows-stream", "6.9.2",
       "POST opened, its window raised to 2^31-1, then SETTINGS_INITIAL_WINDOW_SIZE = 65536",
       "GOAWAY FLOW_CONTROL_ERROR",
       connection_error("FLOW_CONTROL_ERROR", lambda c: post_open(c, 1, "/")
                        + window_update(1, (1 << 31) - 1 - 65535)
                        + settings((S_INITIAL_WINDOW_SIZE, 65536))))

# §6.10 CONTINUATION


def split_block(c, headers, parts):
    b = c.headers_block(headers)
    step = max(1, len(b) // parts + 1)
    return [b[i:i + step] for i in range(0, len(b), step)]


@case("continuation-served", "6.10",
      "a request's header block split over HEADERS and CONTINUATION frames",
      ":status 200")
def _(c):
    parts = split_block(c, c.request_headers(extra=[("x-pad", "p" * 100)]), 4)
    out = frame(HEADERS, END_STREAM, 1, parts[0])
    for i, p in enumerate(parts[1:], 1):
        out += frame(CONTINUATION, END_HEADERS if i == len(parts) - 1 else 0, 1, p)
    c.send(out)
    c.expect_status(1)


simple("continuation-after-end-headers", "6.10",
       "HEADERS with END_HEADERS, then CONTINUATION on the same stream",
       "GOAWAY PROTOCOL_ERROR",
       connection_error("PROTOCOL_ERROR", lambda c: c.headers(1, end_stream=False)
                        + frame(CONTINUATION, END_HEADERS, 1, c.headers_block([("x-a", "b")]))))
simple("continuation-after-data", "6.10", "POST opened, DATA, then CONTINUATION",
       "GOAWAY PROTOCOL_ERROR",
       connection_error("PROTOCOL_ERROR", lambda c: post_open(c, 1) + data(1, b"x")
                        + frame(CONTINUATION, END_HEADERS, 1, c.headers_block([("x-a", "b")]))))
simple("continuation-other-stream", "6.10",
       "HEADERS without END_HEADERS on stream 1, CONTINUATION on stream 3",
       "GOAWAY PROTOCOL_ERROR",
       connection_error("PROTOCOL_ERROR", lambda c: (
           lambda p: frame(HEADERS, END_STREAM, 1, p[0]) + frame(CONTINUATION, END_HEADERS, 3, p[1])
       )(split_block(c, c.request_headers(), 2))))
simple("continuation-stream-0", "6.10",
       "HEADERS without END_HEADERS on stream 1, CONTINUATION on stream 0",
       "GOAWAY PROTOCOL_ERROR",
       connection_error("PROTOCOL_ERROR", lambda c: (
           lambda p: frame(HEADERS, END_STREAM, 1, p[0]) + frame(CONTINUATION, END_HEADERS, 0, p[1])
       )(split_block(c, c.request_headers(), 2))))

# §8.1 HTTP message framing

simple("content-length-short", "8.1.1",
       "POST with content-length: 8 and 4 bytes of DATA ending the stream",
       "RST_STREAM PROTOCOL_ERROR",
       stream_error(1, "PROTOCOL_ERROR", lambda c: post_open(c, 1, "/echo", [(
           "content-length", "8")]) + data(1, b"test", end=True)))
simple("content-length-long", "8.1.1", "POST with content-length: 4 and 8 bytes of DATA",
       "RST_STREAM PROTOCOL_ERROR",
       stream_error(1, "PROTOCOL_ERROR", lambda c: post_open(c, 1, "/echo", [(
           "content-length", "4")]) + data(1, b"testtest", end=True)))
simple("content-length-no-data", "8.1.1",
       "HEADERS with END_STREAM and content-length: 4", "RST_STREAM PROTOCOL_ERROR",
       stream_error(1, "PROTOCOL_ERROR", lambda c: c.headers(1, c.request_headers(
           "POST", "/echo", [("content-length", "4")]))))


@case("trailers-accepted", "8.1",
      "POST /echo, DATA `abc`, then a HEADERS of trailers with END_STREAM",
      ":status 200")
def _(c):
    c.send(post_open(c, 1) + data(1, b"abc")
           + c.headers(1, [("x-trailer", "yes")], end_stream=True))
    headers, body = c.expect_status(1)
    if b"abc" not in body:
        raise Fail("body %r not echoed" % body[-60:])


simple("trailers-without-end-stream", "8.1",
       "POST opened, DATA, then a second HEADERS without END_STREAM",
       "RST_STREAM PROTOCOL_ERROR",
       stream_error(1, "PROTOCOL_ERROR", lambda c: post_open(c, 1) + data(1, b"abc")
                    + c.headers(1, [("x-trailer", "yes")], end_stream=False)))
simple("trailers-pseudo-header", "8.1",
       "POST opened (no content-length), DATA, trailers holding :method",
       "RST_STREAM PROTOCOL_ERROR",
       stream_error(1, "PROTOCOL_ERROR", lambda c: post_open(c, 1) + data(1, b"abc")
                    + c.headers(1, [(":method", "POST")], end_stream=True)))
simple("trailers-pseudo-header-with-length", "8.1",
       "POST with content-length: 3, DATA `abc`, trailers holding :method",
       "RST_STREAM PROTOCOL_ERROR",
       stream_error(1, "PROTOCOL_ERROR", lambda c: post_open(c, 1, "/echo", [(
           "content-length", "3")]) + data(1, b"abc")
           + c.headers(1, [(":method", "POST")], end_stream=True)))

# §8.2 HTTP fields

malformed("header-uppercase", "8.2.1", "a request with field name `X-Upper`",
          lambda c: c.request_headers(extra=[("X-Upper", "a")]))
malformed("header-connection", "8.2.2", "a request with `connection: keep-alive`",
          lambda c: c.request_headers(extra=[("connection", "keep-alive")]))
malformed("header-transfer-encoding", "8.2.2", "a request with `transfer-encoding: chunked`",
          lambda c: c.request_headers(extra=[("transfer-encoding", "chunked")]))
malformed("header-te-not-trailers", "8.2.2", "a request with `te: gzip`",
          lambda c: c.request_headers(extra=[("te", "gzip")]))
malformed("header-value-newline", "8.2.1", "a field value holding CR LF",
          lambda c: c.request_headers(extra=[("x-a", "a\r\nx-b: b")]))
simple("header-te-trailers-ok", "8.2.2", "a request with `te: trailers`", ":status 200",
       lambda c: (c.send(c.headers(1, c.request_headers(extra=[("te", "trailers")]))),
                  c.expect_status(1)))


@case("cookies-crumbs", "8.2.3", "GET /echo with two cookie fields",
      ":status 200, the backend sees one `cookie: a=1; b=2`")
def _(c):
    c.send(c.headers(1, c.request_headers("GET", "/echo", [("cookie", "a=1"),
                                                            ("cookie", "b=2")])))
    headers, body = c.expect_status(1)
    if b"a=1; b=2" not in body:
        raise Fail("crumbs not joined: %r" % body)


# §8.3 Pseudo-header fields

def without(c, name):
    return [h for h in c.request_headers() if h[0] != name]


malformed("pseudo-unknown", "8.3", "a request with pseudo-header `:foo`",
          lambda c: c.request_headers(extra=[(":foo", "bar")]))
malformed("pseudo-response-in-request", "8.3", "a request with `:status: 200`",
          lambda c: c.request_headers() + [(":status", "200")])
malformed("pseudo-after-regular", "8.3", "`:path` after a regular field",
          lambda c: without(c, ":path") + [("x-a", "b"), (":path", "/")])
malformed("pseudo-duplicate-method", "8.3.1", "`:method` twice",
          lambda c: c.request_headers() + [(":method", "GET")])
malformed("pseudo-duplicate-path", "8.3.1", "`:path` twice",
          lambda c: c.request_headers() + [(":path", "/")])
malformed("pseudo-missing-method", "8.3.1", "a request without `:method`",
          lambda c: without(c, ":method"))
malformed("pseudo-missing-scheme", "8.3.1", "a request without `:scheme`",
          lambda c: without(c, ":scheme"))
malformed("pseudo-missing-path", "8.3.1", "a request without `:path`",
          lambda c: without(c, ":path"))
malformed("pseudo-empty-path", "8.3.1", "a request with an empty `:path`",
          lambda c: without(c, ":path") + [(":path", "")])
malformed("authority-host-differ", "8.3.1", "`:authority` and a `host` field that differ",
          lambda c: c.request_headers(extra=[("host", "elsewhere.test")]))

# Header list size (SETTINGS_MAX_HEADER_LIST_SIZE, lb's max_header_list_size)


@case("header-list-too-large", "6.5.2",
      "a 40 KB header field over HEADERS + CONTINUATION (list limit 32 KB), then a GET",
      ":status 431 on the first stream, :status 200 on the second")
def _(c):
    parts = split_block(c, c.request_headers(extra=[("x-big", "b" * 40000)]), 3)
    out = frame(HEADERS, END_STREAM, 1, parts[0])
    for i, p in enumerate(parts[1:], 1):
        out += frame(CONTINUATION, END_HEADERS if i == len(parts) - 1 else 0, 1, p)
    c.send(out)
    c.expect_status(1, "431")
    c.get(3)
    c.expect_status(3)


# Floods


def flood_until_goaway(c, chunk, code="ENHANCE_YOUR_CALM", rst_ok=()):
    c.send(chunk)
    c.expect_goaway(CODE[code], rst_ok=rst_ok)


simple("flood-ping", "flood", "5000 PINGs in one write, nothing read meanwhile",
       "GOAWAY ENHANCE_YOUR_CALM",
       lambda c: flood_until_goaway(c, ping() * 5000))
simple("flood-settings", "flood", "5000 empty SETTINGS in one write",
       "GOAWAY ENHANCE_YOUR_CALM",
       lambda c: flood_until_goaway(c, settings() * 5000))
simple("flood-empty-data", "flood", "POST opened, then 5000 empty DATA frames",
       "GOAWAY ENHANCE_YOUR_CALM",
       lambda c: flood_until_goaway(c, post_open(c, 1, "/") + data(1, b"") * 5000))
simple("flood-priority", "flood", "5000 PRIORITY frames on idle streams",
       "GOAWAY ENHANCE_YOUR_CALM",
       lambda c: flood_until_goaway(c, b"".join(priority(2 * i + 1, 0) for i in range(5000))))
simple("flood-unknown-frames", "flood", "5000 frames of an unknown type",
       "GOAWAY ENHANCE_YOUR_CALM",
       lambda c: flood_until_goaway(c, frame(0x42, 0, 0, b"") * 5000))


@case("flood-rapid-reset", "flood",
      "1000 x (HEADERS GET opening a stream, RST_STREAM CANCEL at once) (CVE-2023-44487)",
      "GOAWAY ENHANCE_YOUR_CALM")
def _(c):
    out = b"".join(c.headers(2 * i + 1, c.request_headers("GET", "/delay/1000"))
                   + rst(2 * i + 1, CODE["CANCEL"]) for i in range(1000))
    flood_until_goaway(c, out)


@case("flood-refused-streams", "flood",
      "1000 streams opened at once, none ended (far past SETTINGS_MAX_CONCURRENT_STREAMS)",
      "REFUSED_STREAM for the excess, then GOAWAY ENHANCE_YOUR_CALM")
def _(c):
    out = b"".join(post_open(c, 2 * i + 1, "/") for i in range(1000))
    flood_until_goaway(c, out, rst_ok=(CODE["REFUSED_STREAM"],))


def continuation_flood(c, fragment):
    """HEADERS without END_HEADERS, then CONTINUATIONs without end, a batch at a time with a
    pause for the answer between: the server must give up within a bounded number of bytes."""
    import select
    limit = 1 << 20
    c.sync()
    c.send(frame(HEADERS, END_STREAM, 1, c.headers_block(c.request_headers())))
    one = frame(CONTINUATION, 0, 1, fragment)
    batch = one * max(64, 65536 // len(one))
    sent = 0
    while sent < limit and not c.closed and not c.has_goaway():
        try:
            c.sock.sendall(batch)
        except (BrokenPipeError, ConnectionResetError):
            break
        sent += len(batch)
        readable, _, _ = select.select([c.sock], [], [], 0.5)
        if readable:
            try:
                got = c.sock.recv(65536)
            except ConnectionResetError:
                got = b""
            c.buf += got
            c.closed = not got
    if sent >= limit and not c.has_goaway():
        raise Fail("%d bytes of CONTINUATION sent and no answer" % sent)
    c.expect_goaway(CODE["ENHANCE_YOUR_CALM"])


simple("flood-continuation", "flood",
       "HEADERS without END_HEADERS, then endless small CONTINUATION frames (CVE-2024-27316)",
       "GOAWAY ENHANCE_YOUR_CALM within 1 MB sent",
       lambda c: continuation_flood(c, c.headers_block([("x-a", "b")])))
simple("flood-continuation-large", "flood",
       "HEADERS without END_HEADERS, then endless 16 KB CONTINUATION frames",
       "GOAWAY ENHANCE_YOUR_CALM within 1 MB sent",
       lambda c: continuation_flood(c, b"\x00" * 16384))


@case("hpack-bomb", "flood",
      "a 4000-byte field added to the HPACK table, then indexed 1000 times in a 1 KB block",
      ":status 431, and the connection still serves a GET")
def _(c):
    literal = b"\x40\x05x-big" + b"\x7f" + bytes([0x80 | ((4000 - 127) & 0x7F),
                                                 (4000 - 127) >> 7]) + b"z" * 4000
    block = c.headers_block(c.request_headers()) + literal + b"\xbe" * 1000
    c.send(c.headers(1, block=block))
    c.expect_status(1, "431")
    # Our encoder's table still stands as it was; the server's decoder holds x-big too.
    c.encoder.header_table.add(b"x-big", b"z" * 4000)
    c.get(3)
    c.expect_status(3)


# ---- running -----------------------------------------------------------------------------------

def run_case(host, port, fn):
    c = Conn(host, port, preface=not getattr(fn, "raw", False))
    try:
        fn(c)
    finally:
        c.close()


def main(argv):
    if argv[:1] == ["--list"]:
        for cid, section, sent, expected, _ in CASES:
            print("%s\t%s\t%s -> %s" % (cid, section, sent, expected))
        return 0
    markdown = argv[:1] == ["--markdown"]
    if markdown:
        argv = argv[1:]
    if len(argv) < 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    host, port = argv[0], int(argv[1])
    wanted = argv[2:]
    known = {c[0] for c in CASES}
    unknown = [w for w in wanted if w not in known]
    if unknown:
        print("unknown case(s): %s" % " ".join(unknown), file=sys.stderr)
        return 2
    results = []
    started = time.monotonic()
    for cid, section, sent, expected, fn in CASES:
        if wanted and cid not in wanted:
            continue
        try:
            run_case(host, port, fn)
            results.append((cid, section, sent, expected, None))
            if not markdown:
                print("PASS %s" % cid, flush=True)
        except Fail as e:
            results.append((cid, section, sent, expected, str(e)))
            if not markdown:
                print("FAIL %s: %s" % (cid, e), flush=True)
        except OSError as e:
            results.append((cid, section, sent, expected, "socket error: %s" % e))
            if not markdown:
                print("FAIL %s: socket error: %s" % (cid, e), flush=True)
    failed = [r for r in results if r[4] is not None]
    if markdown:
        print("| Case | RFC 9113 § | What is sent | Expected | Result |")
        print("|---|---|---|---|---|")
        for cid, section, sent, expected, error in results:
            result = "pass" if error is None else "**fail**: " + error
            cell = lambda s: s.replace("|", "\\|")
            print("| `%s` | %s | %s | %s | %s |" % (cid, section, cell(sent), cell(expected),
                                                 cell(result)))
    print("%d cases, %d passed, %d failed (%.1f s)" % (
        len(results), len(results) - len(failed), len(failed), time.monotonic() - started))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
