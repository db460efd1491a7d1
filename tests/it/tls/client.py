#!/usr/bin/env python3
"""A TLS client for lb's integration tests (tests/it/tls/), on Python's ssl module.

    client.py ADDR SNI CAFILE session   one TLS connection; prints a JSON line about the
                                        handshake, then for each stdin line `METHOD PATH [BODY]`
                                        sends that request on the same connection and prints a
                                        JSON line with the response; a closed connection prints
                                        {"event": "closed"} and ends the program
    client.py ADDR SNI CAFILE ws        a WebSocket upgrade by hand on /ws, one masked text
                                        frame, its echo, a close; prints one JSON line

Every line printed is a JSON object; the certificate is verified against CAFILE for SNI.
"""

import base64
import http.client
import json
import os
import socket
import ssl
import sys


def emit(obj):
    print(json.dumps(obj), flush=True)


def connect(addr, sni, cafile):
    host, port = addr.rsplit(":", 1)
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.set_alpn_protocols(["http/1.1"])
    raw = socket.create_connection((host, int(port)), timeout=10)
    return ctx.wrap_socket(raw, server_hostname=sni)


def handshake(tls):
    cert = tls.getpeercert()
    subject = dict(pair[0] for pair in cert["subject"])
    return {
        "event": "handshake",
        "version": tls.version(),
        "alpn": tls.selected_alpn_protocol(),
        "serial": int(cert["serialNumber"], 16),
        "cn": subject.get("commonName"),
        "san": [value for _, value in cert.get("subjectAltName", ())],
        "pem": ssl.DER_cert_to_PEM_cert(tls.getpeercert(binary_form=True)),
    }


def session(tls, sni):
    conn = http.client.HTTPConnection(sni)
    conn.sock = tls
    # A closed connection must show, not be replaced by a fresh plain-text one.
    conn.auto_open = 0
    for line in sys.stdin:
        parts = line.rstrip("\n").split(" ", 2)
        if len(parts) < 2:
            continue
        method, path = parts[0], parts[1]
        body = parts[2].encode() if len(parts) > 2 else None
        try:
            conn.request(method, path, body=body)
            resp = conn.getresponse()
            data = resp.read()
        except (http.client.HTTPException, OSError) as e:
            emit({"event": "closed", "error": repr(e)})
            return
        emit(
            {
                "event": "response",
                "status": resp.status,
                "headers": resp.getheaders(),
                "body": data.decode("latin-1"),
            }
        )
        if resp.will_close:
            emit({"event": "closed", "error": "Connection: close"})
            return


def frame(opcode, payload):
    """A final client frame, masked (RFC 6455 section 5.3)."""
    mask = os.urandom(4)
    head = bytes([0x80 | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([0x80 | 127]) + n.to_bytes(8, "big")
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def read_exact(tls, pending, n):
    while len(pending) < n:
        chunk = tls.recv(65536)
        if not chunk:
            raise EOFError("closed inside a frame")
        pending += chunk
    return pending


def read_frame(tls, pending):
    pending = read_exact(tls, pending, 2)
    opcode, length, at = pending[0] & 0x0F, pending[1] & 0x7F, 2
    if length == 126:
        pending = read_exact(tls, pending, 4)
        length, at = int.from_bytes(pending[2:4], "big"), 4
    elif length == 127:
        pending = read_exact(tls, pending, 10)
        length, at = int.from_bytes(pending[2:10], "big"), 10
    pending = read_exact(tls, pending, at + length)
    return opcode, bytes(pending[at : at + length]), pending[at + length :]


def websocket(tls, sni):
    key = base64.b64encode(os.urandom(16)).decode()
    tls.sendall(
        (
            f"GET /ws HTTP/1.1\r\nHost: {sni}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    pending = b""
    while b"\r\n\r\n" not in pending:
        chunk = tls.recv(65536)
        if not chunk:
            emit({"event": "closed", "head": pending.decode("latin-1")})
            return
        pending += chunk
    head, pending = pending.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(
        (name.strip().lower(), value.strip())
        for name, value in (l.split(":", 1) for l in lines[1:] if ":" in l)
    )
    result = {"event": "upgrade", "status_line": lines[0], "headers": headers, "key": key}
    text = "héllo over tls".encode()
    big = bytes(i * 31 % 256 for i in range(70000))
    tls.sendall(frame(0x1, text) + frame(0x2, big))
    opcode, payload, pending = read_frame(tls, pending)
    result["text"] = [opcode, payload.decode()]
    opcode, payload, pending = read_frame(tls, pending)
    result["binary_echoed"] = opcode == 0x2 and payload == big
    tls.sendall(frame(0x8, (1000).to_bytes(2, "big")))
    opcode, payload, pending = read_frame(tls, pending)
    result["close"] = [opcode, int.from_bytes(payload[:2], "big")]
    emit(result)


def main():
    addr, sni, cafile, mode = sys.argv[1:5]
    try:
        tls = connect(addr, sni, cafile)
    except (OSError, ssl.SSLError) as e:
        emit({"event": "handshake_failed", "error": repr(e)})
        return
    emit(handshake(tls))
    if mode == "session":
        session(tls, sni)
    elif mode == "ws":
        websocket(tls, sni)
    else:
        sys.exit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
