#!/usr/bin/env python3
"""Strings holding U+0000 or an unpaired surrogate, on every string field of every endpoint of
`lantern serve` (a tiny random model with a chat template of the test's own):

- U+0000 is data where the field is data, never a silent cut: /tokenize of "hello\\u0000 world"
  gives the tokens of "hello", the NUL byte and " world" (and /detokenize gives the string back);
  completions prompts (string and list), echo, chat content (string and text parts), template
  keywords and continue_final_message reach the tokenizer whole; a stop string stops on the whole
  string ("a\\u0000b" does not stop on "a"; "\\u0000" stops on a NUL), stop_reason carries it;
- where the field is a name it must match exactly: "system\\u0000" is an unknown role (400),
  "<model>\\u0000zzz" an unknown model (404 on every endpoint), "text\\u0000" an unsupported
  content part or response_format type; a key holding it ("5\\u0000" in logit_bias) is a 400
  "not valid JSON" (Jansson keeps keys NUL-terminated);
- an unpaired surrogate ("\\ud800", "\\udc00", a high one without its low one) in any string,
  key or value, is one 400 invalid_request_error on every endpoint whose message names the
  surrogate and where its string ends (line, column, byte; param null: the reader gives no field
  path); JSON that cJSON would misread ("\\uZZZZ", raw control characters, trailing data) and
  invalid UTF-8 are a 400 "not valid JSON";
- the server keeps serving.
"""
import json
import os
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request

import ltcheck
from ltcheck import check, Server

TEMPLATE = ("{% for m in messages %}<{{ m['role'] }}>"
            "{% if m['content'] is string %}{{ m['content'] }}"
            "{% else %}{% for p in m['content'] %}[{{ p['text'] }}]{% endfor %}{% endif %}"
            "{{ '\\n' }}"
            "{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}"
            "{% if suffix is defined %}{{ suffix }}{% endif %}")


def make_model(tmp):
    """llama-tiny-gguf (tools/random_models.json) with TEMPLATE as its chat template."""
    src = os.environ["LANTERN_SOURCE_DIR"]
    with open(os.path.join(src, "tools", "random_models.json")) as f:
        args = json.load(f)["llama-tiny-gguf"]
    out = os.path.join(tmp, "chat-tiny.gguf")
    subprocess.run([sys.executable, os.path.join(src, "tools", "make_random_model.py"),
                    "--out", out, *args, "--chat-template", TEMPLATE], check=True,
                   capture_output=True)
    return out


class Client:
    def __init__(self, base):
        self.base = base

    def post(self, path, body):
        """(status, parsed JSON or the raw text); body: an object (json.dumps escapes NUL and
        lone surrogates as \\u0000 / \\ud800) or the raw text."""
        data = body if isinstance(body, (bytes, str)) else json.dumps(body)
        data = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
        req = urllib.request.Request(self.base + path, data=data,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                status, text = r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            status, text = e.code, e.read().decode()
        try:
            return status, json.loads(text)
        except ValueError:
            return status, text

    def get(self, path):
        try:
            with urllib.request.urlopen(self.base + path, timeout=30) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def tokens(self, text, add_special=False):
        st, r = self.post("/tokenize", {"prompt": text, "add_special_tokens": add_special})
        return r["tokens"] if st == 200 else None


def err_of(r):
    return r.get("error", {}) if isinstance(r, dict) else {}


ANY = object()


def check_error(label, resp, status, param=ANY, has=()):
    """resp is a 400-style error of invalid_request_error; param (None: null) unless ANY; its
    message holds every string of has."""
    st, r = resp
    e = err_of(r)
    ok = st == status and e.get("type") == "invalid_request_error"
    if param is not ANY:
        ok = ok and e.get("param") == param
    for h in has:
        ok = ok and h in e.get("message", "")
    check(label, ok, f"{st} {r!r:.400}")


# ---- U+0000 as data ----

def test_nul_data(cl, model):
    hello, nul, world = cl.tokens("hello"), cl.tokens("\0"), cl.tokens(" world")
    check("NUL: the NUL byte is one token of its own", nul is not None and len(nul) == 1, nul)
    st, r = cl.post("/tokenize", {"prompt": "hello\0 world", "add_special_tokens": False})
    want = (hello or []) + (nul or []) + (world or [])
    check("NUL: /tokenize of 'hello\\0 world' is hello + NUL + ' world', not cut at the NUL",
          st == 200 and r["tokens"] == want and r["count"] == len(want), f"{st} {r} want {want}")
    st, d = cl.post("/detokenize", {"tokens": want})
    check("NUL: /detokenize gives the string back", st == 200 and d.get("prompt") == "hello\0 world",
          f"{st} {d!r}")

    st, r = cl.post("/v1/completions", {"prompt": "hello\0 world", "max_tokens": 1, "echo": True,
                                        "temperature": 0})
    ok = st == 200 and r["usage"]["prompt_tokens"] == len(want) and \
        r["choices"][0]["text"].startswith("hello\0 world")
    check("NUL: a completions prompt is tokenized whole and echoed whole", ok, f"{st} {r!r:.300}")
    st, r = cl.post("/v1/completions", {"prompt": ["a\0b", "\0"], "max_tokens": 1})
    n = len(cl.tokens("a\0b") or []) + len(nul or [])
    check("NUL: a list of prompts is tokenized whole",
          st == 200 and r["usage"]["prompt_tokens"] == n and n >= 3, f"{st} {r!r:.300}")

    # chat content, text parts, keywords, continue_final_message: the template sees the NUL
    cases = [
        ("string content", {"messages": [{"role": "user", "content": "hi\0there"}]},
         "<user>hi\0there\n<assistant>"),
        ("text parts", {"messages": [{"role": "user", "content": [
            {"type": "text", "text": "a\0b"}, {"type": "text", "text": "\0"}]}]},
         "<user>a\0b\n\0\n<assistant>"),
        ("a template keyword", {"messages": [{"role": "user", "content": "q"}],
                                "chat_template_kwargs": {"suffix": "z\0z"}},
         "<user>q\n<assistant>z\0z"),
        ("continue_final_message", {"messages": [{"role": "user", "content": "q"},
                                                 {"role": "assistant", "content": "ans\0wer"}],
                                    "continue_final_message": True,
                                    "add_generation_prompt": False},
         "<user>q\n<assistant>ans\0wer"),
    ]
    for label, body, rendered in cases:
        want = cl.tokens(rendered)
        st, r = cl.post("/tokenize", dict(body, add_special_tokens=False))
        check(f"NUL in chat ({label}): /tokenize of the messages is the rendered text's",
              st == 200 and r["tokens"] == want, f"{st} {r!r:.300} want {want}")
        st, r = cl.post("/v1/chat/completions", dict(body, max_tokens=1))
        check(f"NUL in chat ({label}): chat completions takes it whole",
              st == 200 and r["usage"]["prompt_tokens"] == len(want or []), f"{st} {r!r:.300}")
    st, r = cl.post("/v1/completions", {"prompt": "x", "max_tokens": 1, "user": "u\0v"})
    check("NUL: 'user' is data (accepted)", st == 200, f"{st} {r!r:.200}")


def test_nul_stops(cl):
    nul, a = cl.tokens("\0"), cl.tokens("a")
    if not (nul and a and len(nul) == 1 and len(a) == 1):
        check("stops: the test's tokens exist", False, f"{nul} {a}")
        return

    def forced(tok, **kw):
        body = {"prompt": "x", "max_tokens": 4, "temperature": 0, "ignore_eos": True,
                "logit_bias": {str(tok): 100}}
        body.update(kw)
        return cl.post("/v1/completions", body)

    st, r = forced(nul[0])
    check("stops: the forced output is NUL bytes",
          st == 200 and r["choices"][0]["text"] == "\0" * 4, f"{st} {r!r:.300}")
    st, r = forced(nul[0], stop="\0")
    c = r["choices"][0] if st == 200 else {}
    check("stops: stop '\\0' stops on a NUL (and is not dropped as empty)",
          c.get("finish_reason") == "stop" and c.get("text") == "" and
          c.get("stop_reason") == "\0", f"{st} {r!r:.300}")
    st, r = forced(nul[0], stop=["\0\0"], include_stop_str_in_output=True)
    c = r["choices"][0] if st == 200 else {}
    check("stops: include_stop_str_in_output writes the whole stop string",
          c.get("finish_reason") == "stop" and c.get("text") == "\0\0", f"{st} {r!r:.300}")
    st, r = forced(a[0], stop=["a\0b"])
    c = r["choices"][0] if st == 200 else {}
    check("stops: stop 'a\\0b' does not stop on 'a'",
          c.get("finish_reason") == "length" and c.get("text") == "aaaa", f"{st} {r!r:.300}")
    # streaming goes through the same stopper
    st, text = stream(cl, {"prompt": "x", "max_tokens": 4, "temperature": 0, "ignore_eos": True,
                           "logit_bias": {str(nul[0]): 100}, "stop": "\0", "stream": True})
    check("stops: a streamed completion stops on '\\0' too",
          st == 200 and '"finish_reason":"stop"' in text.replace(" ", ""), f"{st} {text[:300]}")


def stream(cl, body):
    req = urllib.request.Request(cl.base + "/v1/completions", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


# ---- names must match exactly ----

def test_nul_names(cl, model):
    name = json.loads(cl.get("/v1/models")[1])["data"][0]["id"]
    bad = name + "\0zzz"
    for path, body in [("/v1/completions", {"prompt": "x", "max_tokens": 1}),
                       ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}],
                                                 "max_tokens": 1}),
                       ("/tokenize", {"prompt": "x"}),
                       ("/detokenize", {"tokens": [5]})]:
        st, r = cl.post(path, dict(body, model=name))
        check(f"names: {path} accepts the served model's name", st == 200, f"{st} {r!r:.200}")
        st, r = cl.post(path, dict(body, model=bad))
        e = err_of(r)
        check(f"names: {path} answers 404 model_not_found for '<model>\\0zzz'",
              st == 404 and e.get("code") == "model_not_found" and "\\u0000" in e.get("message", ""),
              f"{st} {r!r:.300}")
    for path in ("/v1/chat/completions", "/tokenize"):
        check_error(f"names: {path}: role 'system\\0' is an unknown role",
                    cl.post(path, {"messages": [{"role": "system\0", "content": "x"}]}), 400,
                    "messages[0]", ("unknown role", "system\\u0000"))
        check_error(f"names: {path}: content part type 'text\\0' is not supported",
                    cl.post(path, {"messages": [{"role": "user", "content": [
                        {"type": "text\0", "text": "x"}]}]}), 400, "messages[0].content",
                    ("text\\u0000",))
    check_error("names: response_format type 'text\\0' is not supported",
                cl.post("/v1/completions", {"prompt": "x", "response_format": {"type": "text\0"}}),
                400, "response_format")
    check_error("names: a key holding U+0000 (logit_bias '5\\0') is refused",
                cl.post("/v1/completions", {"prompt": "x", "logit_bias": {"5\0": 1}}), 400,
                None, ("not valid JSON", "key"))


# ---- unpaired surrogates ----

SURROGATES = ["\ud800", "x\udc00y", "\udbff\u0041"]


def test_surrogates(cl):
    msgs = lambda content: [{"role": "user", "content": content}]  # noqa: E731
    chat = "/v1/chat/completions"
    cases = [  # (path, body with S where the bad string goes, the field it is in)
        ("/v1/completions", lambda S: {"prompt": S}, "prompt"),
        ("/v1/completions", lambda S: {"prompt": ["ok", S]}, "prompt[1]"),
        ("/v1/completions", lambda S: {"prompt": "x", "stop": S}, "stop"),
        ("/v1/completions", lambda S: {"prompt": "x", "stop": ["a", S]}, "stop[1]"),
        ("/v1/completions", lambda S: {"prompt": "x", "model": S}, "model"),
        ("/v1/completions", lambda S: {"prompt": "x", "user": S}, "user"),
        ("/v1/completions", lambda S: {"prompt": "x", "response_format": {"type": S}},
         "response_format.type"),
        ("/v1/completions", lambda S: {"prompt": "x", "logit_bias": {S: 1}}, "logit_bias"),
        (chat, lambda S: {"messages": msgs(S)}, "messages[0].content"),
        (chat, lambda S: {"messages": [{"role": S, "content": "x"}]}, "messages[0].role"),
        (chat, lambda S: {"messages": msgs([{"type": "text", "text": S}])},
         "messages[0].content[0].text"),
        (chat, lambda S: {"messages": msgs("x"), "stop": [S]}, "stop[0]"),
        (chat, lambda S: {"messages": msgs("x"), "chat_template_kwargs": {"suffix": S}},
         "chat_template_kwargs.suffix"),
        (chat, lambda S: {"messages": msgs("x"), "tools": [{"type": "function", "function": {
            "name": S}}]}, "tools[0].function.name"),
        (chat, lambda S: {"messages": msgs("x"), "model": S}, "model"),
        ("/tokenize", lambda S: {"prompt": S}, "prompt"),
        ("/tokenize", lambda S: {"messages": msgs(S)}, "messages[0].content"),
        ("/tokenize", lambda S: {"prompt": "x", "model": S}, "model"),
        ("/detokenize", lambda S: {"tokens": [1], "model": S}, "model"),
    ]
    for path, make, field in cases:
        for s in SURROGATES:
            text = json.dumps(make(s))  # ASCII: the lone surrogate as its \\uXXXX escape
            esc = "\\u%04x" % ord(next(c for c in s if 0xD800 <= ord(c) <= 0xDFFF))
            at = text.index(esc)
            end = text.index('"', at) + 1  # where its string ends
            label = f"surrogates: {path} {field} = {ascii(s)}"
            st, r = cl.post(path, text)
            check_error(label, (st, r), 400, None,
                        ("not valid Unicode", f"unpaired UTF-16 surrogate ({esc})",
                         f"line 1, column {end}", f"(byte {end})"))
    # a valid pair is a character
    st, r = cl.post("/tokenize", {"prompt": "\ud83d\ude00"})
    check("surrogates: a valid pair is a character", st == 200 and r["count"] >= 1, f"{st} {r}")


def test_not_json(cl):
    for label, raw in [("a bad \\u escape", '{"prompt": "a\\uZZZZb"}'),
                       ("a raw control character", '{"prompt": "a\tb"}'),
                       ("trailing data", '{"prompt": "a"} {"x": 1}'),
                       ("a raw NUL byte", '{"prompt": "a\x00b"}'),
                       ("invalid UTF-8", b'{"prompt": "a\xc0\x80b"}'),
                       ("a NUL in a key", '{"prompt": "x", "k\\u0000": 1}')]:
        for path in ("/v1/completions", "/tokenize", "/detokenize"):
            check_error(f"not JSON: {label} on {path}", cl.post(path, raw), 400, None,
                        ("not valid JSON",))


def main():
    with tempfile.TemporaryDirectory() as tmp:
        model = make_model(tmp)
        srv = Server(model, "--threads", "1", "--max-model-len", "256")
        if not srv.base:
            print("FAIL the server did not start: " + srv.log())
            srv.stop()
            return 1
        cl = Client(srv.base)
        try:
            for name, fn in [("NUL data", lambda: test_nul_data(cl, model)),
                             ("NUL stops", lambda: test_nul_stops(cl)),
                             ("NUL names", lambda: test_nul_names(cl, model)),
                             ("surrogates", lambda: test_surrogates(cl)),
                             ("not JSON", lambda: test_not_json(cl))]:
                try:
                    fn()
                except Exception as e:  # noqa: BLE001 - one section's crash must not hide the rest
                    check(f"{name}: ran without an exception", False, f"{e!r} {srv.log(800)}")
            st, _ = cl.get("/health")
            check("the server is still healthy", st == 200, str(st))
        finally:
            rc = srv.stop()
        check("SIGTERM: the server exits 0", rc == 0, f"status {rc}: {srv.log(800)}")
    return ltcheck.summary()


if __name__ == "__main__":
    sys.exit(main())
