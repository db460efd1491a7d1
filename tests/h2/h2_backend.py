#!/usr/bin/env python3
"""An HTTP/2 (prior knowledge) backend with behaviours on demand, for the tests of
`protocol = "h2"` pools, on Python's h2 package.

    h2_backend.py NAME [--max-streams N] [--refuse-all]

Listens on 127.0.0.1 (an ephemeral port, printed as "port N"), prints "conn" for every
connection it accepts and "req METHOD PATH BYTES" for every request it answers, BYTES being
the body it received. By path:

    /refuse        RST_STREAM REFUSED_STREAM before reading anything (every path with
                   --refuse-all)
    /goaway        the first time: GOAWAY naming the stream before this one as the last, then
                   the close; afterwards, as any other path
    /bytes/N       200 with N bytes of the pattern (i % 251), as the windows allow
    /header-crlf   200 whose field value holds CR LF (what an HTTP/1 line must never carry)
    anything else  200 "NAME METHOD PATH BYTES SUM", SUM the byte sum of the body mod 2^32,
                   with the header x-backend: NAME and a trailer x-sum: SUM
"""

import socket
import sys
import threading

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings

SAY = threading.Lock()


def say(line):
    with SAY:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def pattern(n):
    block = bytes(i % 251 for i in range(251 * 64))
    out = bytearray()
    while len(out) < n:
        out += block
    return bytes(out[:n])


GOAWAY_SENT = threading.Event()


class Conn:
    def __init__(self, sock, name, max_streams, refuse_all):
        self.refuse_all = refuse_all
        self.sock = sock
        self.name = name
        config = h2.config.H2Configuration(
            client_side=False, header_encoding="utf-8", validate_outbound_headers=False
        )
        self.h2 = h2.connection.H2Connection(config=config)
        self.h2.local_settings = h2.settings.Settings(
            client=False,
            initial_values={h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: max_streams},
        )
        self.requests = {}  # stream -> [method, path, body bytearray]
        self.sending = {}  # stream -> (bytes left, trailers)
        self.last_stream = 0

    def run(self):
        self.h2.initiate_connection()
        self.flush()
        while True:
            try:
                data = self.sock.recv(65536)
            except OSError:
                return
            if not data:
                return
            try:
                events = self.h2.receive_data(data)
            except h2.exceptions.ProtocolError:
                self.flush()
                return
            for e in events:
                if not self.on_event(e):
                    self.flush()
                    self.sock.close()
                    return
            self.pump()
            self.flush()

    def on_event(self, e):
        if isinstance(e, h2.events.RequestReceived):
            fields = dict(e.headers)
            path = fields.get(":path", "")
            self.requests[e.stream_id] = [fields.get(":method", ""), path, bytearray()]
            if path == "/refuse" or self.refuse_all:
                self.h2.reset_stream(e.stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
                self.requests.pop(e.stream_id)
                say(f"req {fields.get(':method')} {path} refused")
            elif path == "/goaway" and not GOAWAY_SENT.is_set():
                GOAWAY_SENT.set()
                self.h2.close_connection(
                    error_code=h2.errors.ErrorCodes.NO_ERROR,
                    last_stream_id=max(0, e.stream_id - 2),
                )
                say(f"req {fields.get(':method')} {path} goaway")
                return False
        elif isinstance(e, h2.events.DataReceived):
            if e.stream_id in self.requests:
                self.requests[e.stream_id][2] += e.data
            self.h2.acknowledge_received_data(e.flow_controlled_length, e.stream_id)
        elif isinstance(e, h2.events.StreamEnded):
            if e.stream_id in self.requests:
                self.answer(e.stream_id, *self.requests.pop(e.stream_id))
        elif isinstance(e, h2.events.StreamReset):
            self.requests.pop(e.stream_id, None)
            self.sending.pop(e.stream_id, None)
        elif isinstance(e, h2.events.ConnectionTerminated):
            return False
        return True

    def answer(self, stream, method, path, body):
        say(f"req {method} {path} {len(body)}")
        if path.startswith("/bytes/"):
            n = int(path[len("/bytes/"):])
            self.h2.send_headers(
                stream, [(":status", "200"), ("content-length", str(n)), ("x-backend", self.name)]
            )
            self.sending[stream] = (pattern(n), None)
        elif path == "/header-crlf":
            self.h2.send_headers(
                stream,
                [(":status", "200"), ("x-evil", "a\r\ncontent-length: 0"), ("content-length", "2")],
            )
            self.sending[stream] = (b"ok", None)
        else:
            total = sum(body) % (1 << 32)
            text = f"{self.name} {method} {path} {len(body)} {total}".encode()
            self.h2.send_headers(stream, [(":status", "200"), ("x-backend", self.name)])
            self.sending[stream] = (text, [("x-sum", str(total))])

    def pump(self):
        for stream in list(self.sending):
            data, trailers = self.sending[stream]
            data = memoryview(data)  # slices without copies
            while data:
                window = min(
                    self.h2.local_flow_control_window(stream), self.h2.max_outbound_frame_size
                )
                if window <= 0:
                    break
                self.h2.send_data(stream, data[:window].tobytes())
                data = data[window:]
            if data:
                self.sending[stream] = (data, trailers)
                continue
            del self.sending[stream]
            if trailers:
                self.h2.send_headers(stream, trailers, end_stream=True)
            else:
                self.h2.end_stream(stream)

    def flush(self):
        out = self.h2.data_to_send()
        if out:
            try:
                self.sock.sendall(out)
            except OSError:
                pass


def main():
    args = sys.argv[1:]
    if not args:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    name = args[0]
    max_streams = 100
    if "--max-streams" in args:
        max_streams = int(args[args.index("--max-streams") + 1])
    refuse_all = "--refuse-all" in args
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    say(f"port {listener.getsockname()[1]}")
    while True:
        sock, _ = listener.accept()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        say("conn")
        threading.Thread(
            target=lambda s=sock: Conn(s, name, max_streams, refuse_all).run(), daemon=True
        ).start()


if __name__ == "__main__":
    main()
