"""Real OTLP trace receivers for the tests, built from the registries' packages: a gRPC one (grpcio
with opentelemetry-proto's TraceServiceServicer, the official stubs), an http/protobuf one
(http.server decoding opentelemetry-proto's ExportTraceServiceRequest), a black hole (accepts
TCP, never answers) and a dead port; and the decoded spans in a plain-dict shape.

Importing it needs grpcio and opentelemetry-proto (tools/requirements.txt): callers catch the
ImportError and skip (exit 77) in an environment that predates them.
"""
import os
import socket
import ssl
import threading
import time
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

os.environ.setdefault("GRPC_VERBOSITY", "ERROR")  # grpcio's own log lines (TLS refusals)
import grpc  # noqa: E402
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as ts_pb2  # noqa: E402
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as ts_grpc  # noqa: E402


# ---- what arrived, in otlp_send's JSON shape ----

def attrs(kvs):
    out = {}
    for kv in kvs:
        v = kv.value
        kind = v.WhichOneof("value")
        if kind == "string_value":
            out[kv.key] = v.string_value
        elif kind == "int_value":
            out[kv.key] = f"int:{v.int_value}"
        elif kind == "double_value":
            out[kv.key] = f"double:{format(v.double_value, '.17g')}"
        elif kind == "bool_value":
            out[kv.key] = f"bool:{int(v.bool_value)}"
        else:
            out[kv.key] = f"unexpected {kind}"
    return out


def span_dict(s):
    return {
        "trace_id": s.trace_id.hex(), "span_id": s.span_id.hex(),
        "parent_span_id": s.parent_span_id.hex(), "flags": s.flags, "name": s.name,
        "kind": s.kind, "start": str(s.start_time_unix_nano), "end": str(s.end_time_unix_nano),
        "attributes": attrs(s.attributes), "dropped_attributes": s.dropped_attributes_count,
        "events": [{"name": e.name, "time": str(e.time_unix_nano), "attributes": attrs(e.attributes)}
                   for e in s.events],
        "dropped_events": s.dropped_events_count,
        "links": [{"trace_id": l.trace_id.hex(), "span_id": l.span_id.hex(), "flags": l.flags}
                  for l in s.links],
        "status_code": s.status.code, "status_message": s.status.message,
    }


# ---- receivers ----

class Receiver:
    """What every receiver records: the decoded requests with their headers and arrival times.
    `script` says how to answer call i (the last entry repeats): "ok", ("partial", n, message),
    ("fail", grpc code or HTTP status, message, extra HTTP headers)."""

    def __init__(self, script):
        self.script = list(script)
        self.calls = []  # (time, ExportTraceServiceRequest, {header: value}, path)
        self.lock = threading.Lock()

    def record(self, req, headers, path=""):
        with self.lock:
            i = len(self.calls)
            self.calls.append((time.monotonic(), req, headers, path))
            return self.script[min(i, len(self.script) - 1)]

    def spans(self):
        return [s for _, req, _, _ in self.calls for rs in req.resource_spans
                for ss in rs.scope_spans for s in ss.spans]

    def resource_spans(self):
        """(resource attributes as a dict, span as span_dict) for every span received."""
        with self.lock:
            calls = list(self.calls)
        return [(attrs(rs.resource.attributes), span_dict(s)) for _, req, _, _ in calls
                for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans]


class GrpcReceiver(Receiver):
    def __init__(self, script=("ok",), tls=None):
        super().__init__(script)
        rec = self

        class Servicer(ts_grpc.TraceServiceServicer):
            def Export(self, request, context):
                what = rec.record(request, dict(context.invocation_metadata()))
                resp = ts_pb2.ExportTraceServiceResponse()
                if what == "ok":
                    return resp
                if what[0] == "partial":
                    resp.partial_success.rejected_spans = what[1]
                    resp.partial_success.error_message = what[2]
                    return resp
                context.abort(what[1], what[2])

        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        ts_grpc.add_TraceServiceServicer_to_server(Servicer(), self.server)
        if tls:
            creds = grpc.ssl_server_credentials([(open(tls[1], "rb").read(),
                                                  open(tls[0], "rb").read())])
            self.port = self.server.add_secure_port("127.0.0.1:0", creds)
        else:
            self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def close(self):
        self.server.stop(0)


class HttpReceiver(Receiver):
    def __init__(self, script=("ok",), tls=None):
        super().__init__(script)
        rec = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                req = ts_pb2.ExportTraceServiceRequest()
                req.ParseFromString(body)
                hdrs = {k.lower(): v for k, v in self.headers.items()}
                what = rec.record(req, hdrs, self.path)
                status, extra, out = 200, {}, b""
                if what != "ok" and what[0] == "partial":
                    resp = ts_pb2.ExportTraceServiceResponse()
                    resp.partial_success.rejected_spans = what[1]
                    resp.partial_success.error_message = what[2]
                    out = resp.SerializeToString()
                elif what != "ok":
                    status, extra, out = what[1], what[3], what[2].encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(out)))
                for k, v in extra.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(out)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        if tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(tls[0], tls[1])
            self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class BlackHole:
    """Accepts TCP connections and never answers (nor reads)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                self.conns.append(self.sock.accept()[0])
            except OSError:
                return

    def close(self):
        self.sock.close()
        for c in self.conns:
            c.close()


def dead_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port
