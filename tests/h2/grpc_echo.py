#!/usr/bin/env python3
"""A small gRPC service and client for the tests of `protocol = "h2"` pools, on grpcio's
generic handlers (raw bytes, no protoc).

    grpc_echo.py serve NAME [--tls CERT KEY]
        Serves on 127.0.0.1 (an ephemeral port, printed as "port N" once listening):
        /echo.Echo/Unary   answers "NAME:" + the request, with trailing metadata x-served-by
        /echo.Echo/Stream  the request is a count N: answers N messages "NAME:i", 20 ms apart
        /echo.Echo/Fail    fails with NOT_FOUND and the message "no such thing"
        /echo.Echo/Upload  (client streaming) answers the total size of what it received
        /grpc.health.v1.Health/Check  SERVING
        Calls seen are appended to stdout as "call PATH", one per line.

    grpc_echo.py call HOST:PORT [--tls CA --name SERVER_NAME]
        Makes one call of each kind and prints what came back as JSON.

    grpc_echo.py many HOST:PORT N
        Makes N unary calls at once on one channel (one HTTP/2 connection) and prints the
        replies as a JSON list.
"""

import json
import sys
import threading
import time
from concurrent import futures

import grpc


def ident(b):
    return b


SAY = threading.Lock()


def say(line):
    # Handlers run on several threads: one whole line at a time.
    with SAY:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def serve(name, tls):
    def unary(request, context):
        say("call /echo.Echo/Unary")
        context.set_trailing_metadata((("x-served-by", name),))
        return name.encode() + b":" + request

    def stream(request, context):
        say("call /echo.Echo/Stream")
        for i in range(int(request)):
            yield f"{name}:{i}".encode()
            time.sleep(0.02)

    def fail(request, context):
        say("call /echo.Echo/Fail")
        context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")

    def upload(requests, context):
        say("call /echo.Echo/Upload")
        return str(sum(len(r) for r in requests)).encode()

    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(unary, ident, ident),
        "Stream": grpc.unary_stream_rpc_method_handler(stream, ident, ident),
        "Fail": grpc.unary_unary_rpc_method_handler(fail, ident, ident),
        "Upload": grpc.stream_unary_rpc_method_handler(upload, ident, ident),
    }
    def check(request, context):
        say("call /grpc.health.v1.Health/Check")
        # HealthCheckResponse { status: SERVING }
        return b"\x08\x01"

    health = {"Check": grpc.unary_unary_rpc_method_handler(check, ident, ident)}
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=8),
        handlers=[
            grpc.method_handlers_generic_handler("echo.Echo", handlers),
            grpc.method_handlers_generic_handler("grpc.health.v1.Health", health),
        ],
        options=[("grpc.so_reuseport", 0)],
    )
    if tls:
        cert, key = (open(p, "rb").read() for p in tls)
        creds = grpc.ssl_server_credentials([(key, cert)])
        port = server.add_secure_port("127.0.0.1:0", creds)
    else:
        port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(f"port {port}", flush=True)
    server.wait_for_termination()


def call(target, ca, server_name):
    if ca:
        creds = grpc.ssl_channel_credentials(root_certificates=open(ca, "rb").read())
        options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
        channel = grpc.secure_channel(target, creds, options=options)
    else:
        channel = grpc.insecure_channel(target)
    out = {}
    unary = channel.unary_unary("/echo.Echo/Unary", ident, ident)
    reply, c = unary.with_call(b"hello", timeout=20)
    out["unary"] = reply.decode()
    out["unary_trailers"] = {k: v for k, v in c.trailing_metadata()}
    out["unary_code"] = c.code().name
    stream = channel.unary_stream("/echo.Echo/Stream", ident, ident)
    call = stream(b"5", timeout=20)
    out["stream"] = [m.decode() for m in call]
    out["stream_code"] = call.code().name
    try:
        channel.unary_unary("/echo.Echo/Fail", ident, ident)(b"x", timeout=20)
        out["fail"] = "no error"
    except grpc.RpcError as e:
        out["fail"] = [e.code().name, e.details()]
    upload = channel.stream_unary("/echo.Echo/Upload", ident, ident)
    chunks = (b"x" * 100_000 for _ in range(20))
    out["upload"] = upload(chunks, timeout=20).decode()
    print(json.dumps(out), flush=True)


def many(target, n):
    channel = grpc.insecure_channel(target)
    unary = channel.unary_unary("/echo.Echo/Unary", ident, ident)
    calls = [unary.future(str(i).encode(), timeout=30) for i in range(n)]
    print(json.dumps([c.result().decode() for c in calls]), flush=True)


def main():
    args = sys.argv[1:]
    if len(args) >= 2 and args[0] == "serve":
        tls = None
        if "--tls" in args:
            i = args.index("--tls")
            tls = (args[i + 1], args[i + 2])
        serve(args[1], tls)
    elif len(args) >= 2 and args[0] == "call":
        ca = name = None
        if "--tls" in args:
            ca = args[args.index("--tls") + 1]
        if "--name" in args:
            name = args[args.index("--name") + 1]
        call(args[1], ca, name)
    elif len(args) == 3 and args[0] == "many":
        many(args[1], int(args[2]))
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
