#!/usr/bin/env python3
"""`lantern serve` error handling, driven with curl, on a random tiny model (fast; runs under ASan).

A server on llama-tiny-gguf (random weights, a byte-level BPE tokenizer, no chat template) with
--api-key, --max-model-len 128 and --max-request-body 64K. Every error case of the serve spec is
checked for its status code AND the error JSON ({"error": {message, type, param, code}}):
- 400 invalid_request_error: malformed JSON, a body that is not an object, wrong types and
  out-of-range values (param names the field: temperature "hot", max_tokens 1.5, n 0, stop 5,
  messages not a list, logit_bias with a bad key, top_p 2, logprobs 21, stream "yes", token ids
  outside the vocabulary), an empty or missing prompt, prompt + max_tokens over --max-model-len
  (code context_length_exceeded, the message gives the prompt length, the requested total and
  the limit), chat on a model without a chat template (a clear message);
- 404 model_not_found for an unknown model, 404 not_found for an unknown path, 405
  method_not_allowed for a wrong method on every endpoint, 413 request_too_large for a body over
  the limit (with Content-Length and chunked);
- 401 authentication_error / invalid_api_key for a missing or wrong key on every path but /health,
  /metrics and /version, which stay open; X-Request-Id on error responses too;
- a truncated body (Content-Length larger than what is sent, then close), a client sending
  garbage and an idle open connection leave the server healthy and serving;
- a streaming request refused with 400 is not counted as a client disconnect;
- SIGTERM: exit 0, no /dev/shm/lantern-<pid>-* left;
- engine death: kill -9 of the engine process of a second server gives /health 503 and a
  completion 503 engine_unavailable (or a refused connection once the server is gone), the server
  exits non-zero within 10 s and leaves no shared memory or socket file.
Does not use the default model (the ASan run sets LANTERN_MODEL=/nonexistent).
"""
import glob
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time

import ltcheck
from ltcheck import check, Server, tiny_model

BIN = os.environ["LANTERN_BIN"]
KEY = "sk-lantern-test-key"




def curl(base, method, path, body=None, key=KEY, headers=(), data_file=None, timeout=30):
    """One request with curl: (status or None, body text, headers dict lower-cased, curl rc)."""
    with tempfile.TemporaryDirectory() as d:
        out, hdr = os.path.join(d, "body"), os.path.join(d, "headers")
        cmd = ["curl", "-s", "-X", method, "-o", out, "-D", hdr, "-w", "%{http_code}",
               "--max-time", str(timeout)]
        if key is not None:
            cmd += ["-H", f"Authorization: Bearer {key}"]
        for h in headers:
            cmd += ["-H", h]
        if body is not None or data_file is not None:
            if data_file is None:
                data_file = os.path.join(d, "req")
                with open(data_file, "w") as f:
                    f.write(body if isinstance(body, str) else json.dumps(body))
            cmd += ["-H", "Content-Type: application/json", "--data-binary", "@" + data_file]
        r = subprocess.run(cmd + [base + path], capture_output=True, text=True,
                           timeout=timeout + 10)
        text = open(out, errors="replace").read() if os.path.exists(out) else ""
        hd = {}
        if os.path.exists(hdr):
            for line in open(hdr, errors="replace"):
                if ":" in line:
                    k, v = line.split(":", 1)
                    hd[k.strip().lower()] = v.strip()
        status = int(r.stdout) if r.stdout.strip().isdigit() and r.stdout.strip() != "000" else None
        return status, text, hd, r.returncode


ANY = object()


def expect_error(label, resp, status, etype, code, param=ANY, msg_has=()):
    """Checks the status and {"error": {message, type, param, code}}; returns the error dict."""
    st, text, hd, rc = resp
    try:
        body = json.loads(text)
        err = body.get("error") if isinstance(body, dict) else None
    except ValueError:
        err = None
    ok = (st == status and isinstance(err, dict) and
          set(err) == {"message", "type", "param", "code"} and
          isinstance(err["message"], str) and err["message"] and
          err["type"] == etype and err["code"] == code and
          (param is ANY or err["param"] == param) and
          all(s in err["message"] for s in msg_has))
    check(label, ok, f"status {st} (curl rc {rc}), body {text[:400]!r}; want {status} type "
          f"{etype} code {code}" + ("" if param is ANY else f" param {param}") +
          (f" message containing {msg_has}" if msg_has else ""))
    return err or {}


def metric(text, name):
    m = re.search(r"^" + re.escape(name) + r"(\{[^}]*\})?\s+(\S+)\s*$", text, re.M)
    return float(m.group(2)) if m else None


def leftovers(pid):
    rt = os.environ.get("XDG_RUNTIME_DIR") or "/tmp"
    return (glob.glob(f"/dev/shm/lantern-{pid}-*") + glob.glob(os.path.join(rt, f"lantern-{pid}-*"))
            + glob.glob(f"/tmp/lantern-{pid}-*"))


def test_errors(srv, tmp):
    b = srv.base
    C, CH = "/v1/completions", "/v1/chat/completions"
    IRE = "invalid_request_error"

    # a request that works, so the errors below are about what they change
    st, text, hd, _ = curl(b, "POST", C, {"prompt": "hello world", "max_tokens": 4})
    ok = st == 200 and json.loads(text).get("usage", {}).get("completion_tokens") == 4
    check("a valid completion with the key: 200, 4 tokens", ok, f"{st} {text[:300]!r}")
    st, text, hd, _ = curl(b, "POST", C, {"prompt": "hello", "max_tokens": 3, "stream": True})
    check("a valid streaming completion: SSE ending with [DONE]",
          st == 200 and text.rstrip().endswith("data: [DONE]") and text.startswith("data: {"),
          f"{st} {text[-200:]!r}")
    st, text, _, _ = curl(b, "GET", "/v1/models")
    data = json.loads(text).get("data", [{}]) if st == 200 else [{}]
    check("/v1/models: the default served name is the file name without .gguf",
          st == 200 and data[0].get("id") == "model" and data[0].get("max_model_len") == 128,
          f"{st} {text[:300]!r}")

    # 400: bodies and types
    expect_error("malformed JSON: 400", curl(b, "POST", C, '{"prompt": "a",'), 400, IRE, None,
                 None)
    expect_error("JSON that is not an object: 400", curl(b, "POST", C, "[1, 2]"), 400, IRE, None)
    expect_error("JSON string body: 400", curl(b, "POST", C, '"prompt"'), 400, IRE, None)
    expect_error("empty body: 400", curl(b, "POST", C, ""), 400, IRE, None)
    for field, value in [("temperature", "hot"), ("max_tokens", 1.5), ("n", 0), ("stop", 5),
                         ("top_p", 2), ("logprobs", 21), ("stream", "yes"), ("seed", "x"),
                         ("temperature", -1), ("max_tokens", -1), ("n", 1000),
                         ("stop_token_ids", [99999]), ("logit_bias", {"abc": 1}),
                         ("logit_bias", {"99999": 1}), ("logit_bias", {"5": "x"}),
                         ("top_k", "x"), ("echo", 3)]:
        expect_error(f"{field}={json.dumps(value)}: 400 param {field}",
                     curl(b, "POST", C, {"prompt": "a", field: value}), 400, IRE, None, field)
    expect_error("prompt of token ids outside the vocabulary: 400 param prompt",
                 curl(b, "POST", C, {"prompt": [1, 2, 99999]}), 400, IRE, None, "prompt")
    expect_error("prompt of a number: 400 param prompt", curl(b, "POST", C, {"prompt": 5}), 400,
                 IRE, None, "prompt")
    expect_error("empty prompt: 400 param prompt", curl(b, "POST", C, {"prompt": ""}), 400, IRE,
                 None, "prompt")
    expect_error("empty prompt list: 400 param prompt", curl(b, "POST", C, {"prompt": []}), 400,
                 IRE, None, "prompt")
    expect_error("missing prompt: 400 param prompt", curl(b, "POST", C, {"max_tokens": 3}), 400,
                 IRE, None, "prompt")
    expect_error("chat: messages not a list: 400 param messages",
                 curl(b, "POST", CH, {"messages": "hi"}), 400, IRE, None, "messages")
    expect_error("chat on a model without a chat template: 400 saying so",
                 curl(b, "POST", CH, {"messages": [{"role": "user", "content": "hi"}]}), 400, IRE,
                 None, msg_has=("chat template",))
    expect_error("/tokenize messages without a chat template: 400",
                 curl(b, "POST", "/tokenize", {"messages": [{"role": "user", "content": "hi"}]}),
                 400, IRE, None)
    expect_error("/detokenize of ids outside the vocabulary: 400",
                 curl(b, "POST", "/detokenize", {"tokens": [1, 99999]}), 400, IRE, None)

    # 400: context length
    st, text, _, _ = curl(b, "POST", "/tokenize", {"prompt": "a b c d e f g h i j"})
    n = json.loads(text)["count"] if st == 200 else None
    check("/tokenize counts the prompt", isinstance(n, int) and 0 < n < 100, f"{st} {text!r}")
    if isinstance(n, int):
        want = n + (128 - n + 5)
        expect_error("prompt + max_tokens over --max-model-len: 400 context_length_exceeded "
                     "naming the prompt length, the total and the limit",
                     curl(b, "POST", C, {"prompt": "a b c d e f g h i j",
                                         "max_tokens": 128 - n + 5}),
                     400, IRE, "context_length_exceeded", msg_has=(str(n), str(want), "128"))
        st, text, _, _ = curl(b, "POST", C, {"prompt": "a b c d e f g h i j",
                                             "max_tokens": 128 - n})
        check("prompt + max_tokens exactly --max-model-len is accepted", st == 200,
              f"{st} {text[:300]!r}")
        expect_error("streaming and over the context: 400 before any SSE",
                     curl(b, "POST", C, {"prompt": "a b c d e f g h i j", "stream": True,
                                         "max_tokens": 128 - n + 5}),
                     400, IRE, "context_length_exceeded")
    expect_error("a prompt longer than --max-model-len alone: 400 context_length_exceeded",
                 curl(b, "POST", C, {"prompt": "a b " * 100}), 400, IRE,
                 "context_length_exceeded", msg_has=("128",))

    # 404, 405
    expect_error("unknown model: 404 model_not_found",
                 curl(b, "POST", C, {"prompt": "a", "model": "no-such-model"}), 404, IRE,
                 "model_not_found")
    expect_error("unknown model on chat: 404 model_not_found",
                 curl(b, "POST", CH, {"messages": [{"role": "user", "content": "hi"}],
                                      "model": "no-such-model"}), 404, IRE, "model_not_found")
    expect_error("unknown path: 404 not_found", curl(b, "GET", "/v1/nope"), 404, IRE, "not_found")
    expect_error("unknown path (POST): 404 not_found", curl(b, "POST", "/nope", {}), 404, IRE,
                 "not_found")
    for method, path in [("GET", C), ("GET", CH), ("PUT", C), ("DELETE", CH), ("GET", "/tokenize"),
                         ("GET", "/detokenize"), ("POST", "/v1/models"), ("POST", "/health"),
                         ("POST", "/version"), ("POST", "/metrics"),
                         # these wrong methods were answered 200 by the first implementation
                         ("DELETE", "/v1/models"), ("PUT", "/v1/models"), ("DELETE", "/health"),
                         ("PUT", "/version"), ("DELETE", "/metrics")]:
        expect_error(f"{method} {path}: 405 method_not_allowed",
                     curl(b, method, path, {} if method in ("POST", "PUT") else None), 405, IRE,
                     "method_not_allowed")

    # 413
    with open(os.path.join(tmp, "big.json"), "w") as f:
        f.write(json.dumps({"prompt": "a" * 70000, "max_tokens": 1}))
    expect_error("body over --max-request-body: 413 request_too_large",
                 curl(b, "POST", C, data_file=os.path.join(tmp, "big.json")), 413, IRE,
                 "request_too_large")
    expect_error("chunked body over --max-request-body: 413 request_too_large",
                 curl(b, "POST", C, data_file=os.path.join(tmp, "big.json"),
                      headers=["Transfer-Encoding: chunked"]), 413, IRE, "request_too_large")
    st, text, _, _ = curl(b, "POST", C, {"prompt": "hi", "max_tokens": 2},
                          headers=["Transfer-Encoding: chunked"])
    check("a small chunked body is accepted", st == 200, f"{st} {text[:300]!r}")

    # 401 and the open paths
    for method, path, body in [("POST", C, {"prompt": "a"}), ("POST", CH, {"messages": []}),
                               ("GET", "/v1/models", None), ("POST", "/tokenize", {"prompt": "a"}),
                               ("POST", "/detokenize", {"tokens": [1]})]:
        expect_error(f"{path} without a key: 401 invalid_api_key",
                     curl(b, method, path, body, key=None), 401, "authentication_error",
                     "invalid_api_key")
        expect_error(f"{path} with a wrong key: 401 invalid_api_key",
                     curl(b, method, path, body, key=KEY + "x"), 401, "authentication_error",
                     "invalid_api_key")
    expect_error("a key that is a prefix of the right one: 401",
                 curl(b, "GET", "/v1/models", key=KEY[:-1]), 401, "authentication_error",
                 "invalid_api_key")
    expect_error("Basic instead of Bearer: 401",
                 curl(b, "GET", "/v1/models", key=None, headers=[f"Authorization: Basic {KEY}"]),
                 401, "authentication_error", "invalid_api_key")
    expect_error("an oversized body without a key: 401 (not 413, not read)",
                 curl(b, "POST", C, data_file=os.path.join(tmp, "big.json"), key=None), 401,
                 "authentication_error", "invalid_api_key")
    # the spec: the key applies to every path but /health, /metrics and /version
    expect_error("unknown path without a key: 401 (the key applies to every path)",
                 curl(b, "GET", "/v1/nope", key=None), 401, "authentication_error",
                 "invalid_api_key")
    for path in ("/health", "/metrics", "/version"):
        st, text, _, _ = curl(b, "GET", path, key=None)
        check(f"{path} open without a key: 200", st == 200, f"{st} {text[:200]!r}")
    st, text, hd, _ = curl(b, "POST", C, {"prompt": "a", "model": "x"})
    check("an error response has an X-Request-Id", bool(hd.get("x-request-id")), str(hd))
    st, text, hd, _ = curl(b, "POST", C, {"prompt": "a"}, key=None,
                           headers=["X-Request-Id: err-id-7"])
    check("a 401 echoes the client's X-Request-Id", hd.get("x-request-id") == "err-id-7",
          str(hd))

    # a refused streaming request is no client disconnect
    d0 = metric(curl(b, "GET", "/metrics")[1], "lantern:client_disconnects_total")
    curl(b, "POST", C, {"prompt": "a", "stream": True, "temperature": -1})
    curl(b, "POST", C, {"prompt": "a b " * 100, "stream": True})
    d1 = metric(curl(b, "GET", "/metrics")[1], "lantern:client_disconnects_total")
    if d0 is not None:
        check("streaming requests refused with 400 are not counted as client disconnects",
              d1 == d0, f"lantern:client_disconnects_total {d0} -> {d1}")


def served(srv, label):
    st, _, _, _ = curl(srv.base, "GET", "/health", key=None)
    st2, text, _, _ = curl(srv.base, "POST", "/v1/completions", {"prompt": "hi", "max_tokens": 3})
    check(f"{label}: still healthy and serving", st == 200 and st2 == 200,
          f"health {st}, completion {st2} {text[:200]!r}; log {srv.log(500)}")


def test_bad_clients(srv):
    host, port = "127.0.0.1", srv.port
    # truncated body: Content-Length larger than what is sent, then close
    s = socket.create_connection((host, port), timeout=10)
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " +
              KEY.encode() + b"\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
              b'{"prompt": "abc')
    time.sleep(0.2)
    s.close()
    served(srv, "after a truncated body")
    # garbage bytes, then close
    s = socket.create_connection((host, port), timeout=10)
    s.sendall(b"\x00\xff\x16\x03\x01 garbage \r\n\r\nGET / HTTP/9.9\r\n\r\n" + os.urandom(512))
    time.sleep(0.2)
    s.close()
    # a garbage request line, waiting for the answer
    s = socket.create_connection((host, port), timeout=10)
    s.sendall(b"HELLO THERE\r\n\r\n")
    try:
        s.recv(4096)
    except OSError:
        pass
    s.close()
    # connect and close at once; a half request line
    socket.create_connection((host, port), timeout=10).close()
    s = socket.create_connection((host, port), timeout=10)
    s.sendall(b"GET /hea")
    s.close()
    served(srv, "after garbage clients")
    # an idle connection left open does not block others
    idle = socket.create_connection((host, port), timeout=10)
    idle.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{")
    served(srv, "with an idle half-sent request open")
    idle.close()


def test_engine_death(model):
    srv = Server(model, "--threads", "1", wait=120)
    if not srv.base:
        check("engine death: the server starts", False, srv.log())
        srv.stop()
        return
    pid = srv.p.pid
    r = subprocess.run(["ps", "--ppid", str(pid), "-o", "pid=,args="], capture_output=True,
                       text=True)
    kids = [line.split(None, 1) for line in r.stdout.strip().splitlines()]
    engine = [int(k[0]) for k in kids if len(k) == 2 and "__engine" in k[1]] or \
        [int(k[0]) for k in kids]
    check("engine death: the engine is a child of the server", bool(engine), r.stdout)
    if not engine:
        srv.stop()
        return
    os.kill(engine[0], signal.SIGKILL)
    t0 = time.time()
    health, refused = None, False
    while time.time() - t0 < 10:
        st, _, _, rc = curl(srv.base, "GET", "/health", key=None, timeout=5)
        if st is None and srv.p.poll() is not None:
            refused = True
            break
        if st != 200:
            health = st
            break
        time.sleep(0.05)
    check("engine death: /health gives 503", health == 503 or refused,
          f"status {health}, refused {refused}, log {srv.log(600)}")
    resp = curl(srv.base, "POST", "/v1/completions", {"prompt": "hi", "max_tokens": 3}, key=None,
                timeout=5)
    if resp[0] is None and srv.p.poll() is not None:
        check("engine death: a completion is refused (the server has exited)", True)
    else:
        expect_error("engine death: a completion gives 503 engine_unavailable", resp, 503,
                     "service_unavailable_error", "engine_unavailable")
    try:
        srv.p.wait(max(0.1, 10 - (time.time() - t0)))
    except subprocess.TimeoutExpired:
        pass
    rc = srv.p.poll()
    check("engine death: the server exits non-zero within 10 s", rc not in (None, 0),
          f"status {rc} after {time.time() - t0:.1f} s; log {srv.log(600)}")
    srv.stop()
    time.sleep(0.2)
    check("engine death: no shared memory or socket file left", not leftovers(pid),
          str(leftovers(pid)))


def test_random_bodies(srv, n=1000):
    """Seeded random request bodies: valid shapes with fields swapped for random JSON values of
    any type, random byte strings, deep nesting. Every answer must be 200 with a body or a 4xx
    with the error shape; the server stays healthy (run under ASan+UBSan in CI as well)."""
    import http.client
    import random
    rnd = random.Random(1234)
    host, port = "127.0.0.1", srv.port
    fields = ["model", "prompt", "messages", "max_tokens", "max_completion_tokens", "temperature",
              "top_p", "top_k", "min_p", "n", "seed", "stop", "stop_token_ids", "logit_bias",
              "logprobs", "top_logprobs", "echo", "ignore_eos", "min_tokens", "stream",
              "stream_options", "presence_penalty", "frequency_penalty", "repetition_penalty",
              "skip_special_tokens", "include_stop_str_in_output", "user", "best_of", "suffix",
              "response_format", "chat_template_kwargs", "add_generation_prompt", "tokens",
              "add_special_tokens", "continue_final_message", "tools"]

    def value(depth=0):
        k = rnd.randrange(9 if depth < 4 else 6)
        if k == 0:
            return None
        if k == 1:
            return rnd.choice([True, False])
        if k == 2:
            return rnd.choice([0, 1, -1, 2, 7, 127, 128, 300, 2**31, -2**63, 10**30])
        if k == 3:
            return rnd.choice([0.5, -0.0, 1e308, -1e-300, 2.5, float(rnd.randrange(-5, 5))])
        if k == 4:
            return "".join(chr(rnd.choice([rnd.randrange(32, 127), rnd.randrange(0x80, 0x3000),
                                           0x1F600, 0])) for _ in range(rnd.randrange(0, 12)))
        if k == 5:
            return rnd.choice(["", "a", "model", "hello world", "<s>", "\u0000", "x" * 300])
        if k == 6:
            return [value(depth + 1) for _ in range(rnd.randrange(0, 5))]
        if k == 7:
            return {rnd.choice(fields + ["role", "content", "type", "text", "0", "5"]):
                    value(depth + 1) for _ in range(rnd.randrange(0, 4))}
        return [rnd.randrange(-3, 400) for _ in range(rnd.randrange(0, 6))]

    def body():
        b = {"prompt": "hello", "max_tokens": 3} if rnd.random() < 0.5 else \
            {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
        for _ in range(rnd.randrange(1, 5)):
            b[rnd.choice(fields)] = value()
        if isinstance(b.get("max_tokens"), int) and not 0 <= b["max_tokens"] <= 8:
            b["max_tokens"] = 4  # keep generations short; the range checks are tested above
        b.pop("max_completion_tokens", None)
        b.pop("n", None)
        text = json.dumps(b)
        if rnd.random() < 0.15:  # break the JSON itself
            i = rnd.randrange(len(text) + 1)
            text = text[:i] + rnd.choice(["", "{", "]", "\"", "\\", "\x00", ",,"]) + text[i + 1:]
        return text.encode("utf-8", "surrogatepass")

    paths = ["/v1/completions", "/v1/chat/completions", "/tokenize", "/detokenize"]
    bad, statuses = [], {}
    conn = http.client.HTTPConnection(host, port, timeout=60)
    for i in range(n):
        path, data = rnd.choice(paths), body()
        try:
            conn.request("POST", path, data, {"Authorization": f"Bearer {KEY}",
                                              "Content-Type": "application/json"})
            r = conn.getresponse()
            text = r.read()
        except (OSError, http.client.HTTPException) as e:
            bad.append(f"{path} {data[:200]!r}: {e!r}")
            conn.close()
            conn = http.client.HTTPConnection(host, port, timeout=60)
            continue
        statuses[r.status] = statuses.get(r.status, 0) + 1
        ok = False
        if r.status == 200:
            ok = bool(text)
        elif 400 <= r.status < 500:
            try:
                err = json.loads(text)["error"]
                ok = all(k in err for k in ("message", "type", "param", "code")) and err["message"]
            except (ValueError, KeyError, TypeError):
                ok = False
        if not ok:
            bad.append(f"{path} {data[:200]!r}: {r.status} {text[:200]!r}")
    conn.close()
    check(f"{n} random bodies: each answered 200 or 4xx with the error shape ({statuses})",
          not bad, "; ".join(bad[:5]))
    status, _, _, _ = curl(srv.base, "GET", "/health")
    check("random bodies: the server is still healthy", status == 200, str(status))


def main():
    with tempfile.TemporaryDirectory() as tmp:
        model = tiny_model(tmp)
        srv = Server(model, "--threads", "1", "--api-key", KEY, "--max-model-len", "128",
                     "--max-request-body", "64K")
        if not srv.base:
            print("FAIL the server did not start: " + srv.log())
            srv.stop()
            return 1
        pid = srv.p.pid
        t0 = time.time()
        try:
            for name, fn in [("errors", lambda: test_errors(srv, tmp)),
                             ("bad clients", lambda: test_bad_clients(srv)),
                             ("random bodies", lambda: test_random_bodies(srv))]:
                try:
                    fn()
                except Exception as e:  # noqa: BLE001 - one section's crash must not hide the rest
                    check(f"{name}: ran without an exception", False, f"{e!r} {srv.log(800)}")
        finally:
            rc = srv.stop()
        check("SIGTERM: the server exits 0", rc == 0, f"status {rc}: {srv.log(800)}")
        time.sleep(0.2)
        check("SIGTERM: no shared memory or socket file left", not leftovers(pid),
              str(leftovers(pid)))
        try:
            test_engine_death(model)
        except Exception as e:  # noqa: BLE001
            check("engine death: ran without an exception", False, repr(e))
        print(f"     (total {time.time() - t0:.1f} s)")
    return ltcheck.summary()


if __name__ == "__main__":
    sys.exit(main())
