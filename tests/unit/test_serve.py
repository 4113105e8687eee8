#!/usr/bin/env python3
"""`lantern serve` on the default model, driven by the official `openai` Python client.

Starts the real server (`--port 0`, `--served-model-name`, `--threads 1`: an oversubscribed
worker on a small, shared machine is many times slower) on the default model and checks the
OpenAI-compatible contract (see the serve spec), with `--batch-invariant`: a request's tokens do
not depend on what it is batched with, so seeded outputs must match across batch shapes and
schedules (without the flag a sequence's logits differ by ~1e-3 with the batch it runs in).
- completions and chat, streaming and not: greedy streamed text equals the non-streamed text;
  usage is always present in non-streaming responses; `include_usage` adds a last chunk with no
  choices and the right token counts; `max_tokens` / `max_completion_tokens` end with "length";
- `n` with a seed gives choices 0..n-1 and choice i uses seed+i; a list of prompts x n gives
  choice index prompt_index * n + i (checked against each prompt alone, greedy);
- `stop` (a string the greedy text is known to contain) cuts the text right before it with
  finish_reason "stop" (and keeps it with include_stop_str_in_output); `stop_token_ids`;
- `logprobs` on completions (logprobs=2) and on chat (logprobs + top_logprobs=2): one entry per
  generated token, values <= 0, the greedy token is the top one;
- `seed` reproducibility at temperature 1; `echo`; a prompt of token ids equals the text prompt;
- the `timings` extension, the X-Lantern-* and X-Request-Id headers; /v1/models; a wrong model
  gives 404; /tokenize and /detokenize round trip; /health, /version, /metrics;
- 128 concurrent streaming clients (AsyncOpenAI, 8 distinct prompts, greedy, 16 tokens with
  ignore_eos, the default --max-num-seqs 64 so half of them queue): all finish, each text equals
  the same prompt run alone, completion_tokens is right, never more than 64 running;
- a client that disconnects mid-stream (httpx closing the stream, and a raw socket reset) gets its
  request aborted: kv_cache_usage_perc returns to its idle value within 5 s and
  num_requests_running to 0, and the server still answers afterwards;
- a non-streaming request whose client goes away mid-generation is aborted the same way;
- SIGTERM with a stream in flight: the stream ends with `data: [DONE]`, the server exits 0 and
  leaves no /dev/shm/lantern-<pid>-*.
When the default model is absent (LANTERN_MODEL=/nonexistent, as the sanitizer runs set) or
LANTERN_SERVE_TINY=1, it runs on llama-tiny-gguf (random weights) instead: the sections that do
not depend on the real model's text (concurrency, disconnect, SIGTERM), with prompts and
max_tokens that fit its 512 positions.
"""
import asyncio
import glob
import json
import os
import re
import signal
import socket
import struct
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai

import ltcheck
from ltcheck import check, default_model, Server

BIN = os.environ["LANTERN_BIN"]
NAME = "lantern-test"
# set by main(): the tiny random model instead of the default one (see the docstring)
TINY = False
LONG_TOKENS = 2000








def metric(text, name):
    m = re.search(r"^" + re.escape(name) + r"(\{[^}]*\})?\s+(\S+)\s*$", text, re.M)
    return float(m.group(2)) if m else None


def extra(obj, key):
    return (getattr(obj, "model_extra", None) or {}).get(key)


# ---- single requests ----

def par(**calls):
    """Runs the zero-argument callables at once (the engine batches them) and returns
    {name: result or the exception it raised}."""
    def guard(fn):
        try:
            return fn()
        except Exception as e:  # noqa: BLE001 - reported by the check that reads it
            return e
    with ThreadPoolExecutor(max_workers=len(calls)) as ex:
        futs = {k: ex.submit(guard, fn) for k, fn in calls.items()}
        return {k: f.result() for k, f in futs.items()}


def failed(r):
    return f"{r!r} {getattr(r, 'body', '')}" if isinstance(r, Exception) else ""


def test_endpoints(c, http, srv):
    base = srv.base
    models = c.models.list().data
    check("/v1/models lists the served name", [m.id for m in models] == [NAME],
          str([m.model_dump() for m in models]))
    check("/v1/models: owned_by lantern, max_model_len, root",
          models and models[0].owned_by == "lantern" and extra(models[0], "max_model_len")
          and extra(models[0], "root"), str(models[0].model_dump() if models else None))
    m = c.models.retrieve(NAME)
    check("/v1/models/{id} retrieves the served model", m.id == NAME and m.object == "model",
          str(m.model_dump()))
    r = http.get(base + "/v1/models/no-such-model")
    check("/v1/models/{unknown}: 404 model_not_found",
          r.status_code == 404 and r.json()["error"]["code"] == "model_not_found",
          f"{r.status_code} {r.text!r}")
    r = http.get(base + "/health")
    check("/health 200", r.status_code == 200, f"{r.status_code} {r.text!r}")
    r = http.get(base + "/version")
    check("/version gives a version string",
          r.status_code == 200 and isinstance(r.json().get("version"), str) and r.json()["version"],
          f"{r.status_code} {r.text!r}")
    r = http.get(base + "/metrics")
    check("/metrics has the gauges",
          r.status_code == 200 and all(metric(r.text, g) is not None for g in (
              "lantern:kv_cache_usage_perc", "lantern:num_requests_running",
              "lantern:num_requests_waiting")), r.text[:500])
    kv = metric(r.text, "lantern:kv_cache_usage_perc")
    check("/metrics kv_cache_usage_perc within 0..1", kv is not None and 0 <= kv <= 1, str(kv))

    text = "Hello world, this is lantern."
    r = http.post(base + "/tokenize", json={"prompt": text})
    tok = r.json() if r.status_code == 200 else {}
    ids = tok.get("tokens") or []
    check("/tokenize gives tokens and count",
          r.status_code == 200 and ids and tok.get("count") == len(ids) and
          all(isinstance(t, int) for t in ids) and tok.get("max_model_len"),
          f"{r.status_code} {r.text!r}")
    r = http.post(base + "/detokenize", json={"tokens": ids})
    check("/detokenize round trips /tokenize",
          r.status_code == 200 and r.json().get("prompt") == text, f"{r.status_code} {r.text!r}")
    r = http.post(base + "/tokenize", json={"messages": [{"role": "user", "content": text}]})
    check("/tokenize messages renders the chat template (more tokens than the text)",
          r.status_code == 200 and r.json().get("count", 0) > len(ids),
          f"{r.status_code} {r.text!r}")

    try:
        c.completions.create(model="no-such-model", prompt="x", max_tokens=2)
        check("unknown model: 404", False, "no error")
    except openai.NotFoundError as e:
        body = e.body if isinstance(e.body, dict) else {}
        check("unknown model: 404 model_not_found", body.get("code") == "model_not_found",
              str(e.body))
    except openai.APIError as e:
        check("unknown model: 404", False, repr(e))
    try:
        c.chat.completions.create(model=NAME, messages="hi", max_tokens=2)
        check("chat: messages not a list gives 400", False, "no error")
    except openai.BadRequestError as e:
        body = e.body if isinstance(e.body, dict) else {}
        check("chat: messages not a list gives 400 param messages",
              body.get("param") == "messages", str(e.body))
    except openai.APIError as e:
        check("chat: messages not a list gives 400", False, repr(e))


PROMPT = "The capital of France is"
P2 = ["The capital of France is", "My favourite colour is"]
MSGS = [{"role": "user", "content": "What is the capital of France?"}]
TIMING_KEYS = {"queue_ms", "prefill_ms", "decode_ms", "decode_tokens_per_s", "prompt_tokens",
               "cached_prompt_tokens", "completion_tokens"}


def test_greedy(c, http, srv):
    """Every greedy request at once (batched by the engine), then the checks."""
    base = srv.base
    ids = http.post(base + "/tokenize", json={"prompt": PROMPT}).json()["tokens"]
    comp = c.completions.create
    chat = c.chat.completions.create
    ie = {"ignore_eos": True}
    R = par(
        full=lambda: comp(model=NAME, prompt=PROMPT, max_tokens=12, temperature=0),
        stream=lambda: list(comp(model=NAME, prompt=PROMPT, max_tokens=12, temperature=0,
                                 stream=True)),
        ids=lambda: comp(model=NAME, prompt=ids, max_tokens=12, temperature=0),
        echo=lambda: comp(model=NAME, prompt=PROMPT, max_tokens=12, temperature=0, echo=True),
        hdr=lambda: c.completions.with_raw_response.create(
            model=NAME, prompt=PROMPT, max_tokens=4, temperature=0,
            extra_headers={"X-Request-Id": "my-req-42"}),
        hdr2=lambda: c.completions.with_raw_response.create(model=NAME, prompt=PROMPT,
                                                            max_tokens=2),
        max5=lambda: comp(model=NAME, prompt=PROMPT, max_tokens=5, temperature=0, extra_body=ie),
        lp=lambda: comp(model=NAME, prompt=PROMPT, max_tokens=6, temperature=0, logprobs=2,
                        extra_body=ie),
        usage=lambda: list(comp(model=NAME, prompt=PROMPT, max_tokens=7, temperature=0,
                                stream=True, stream_options={"include_usage": True},
                                extra_body=ie)),
        nousage=lambda: list(comp(model=NAME, prompt=PROMPT, max_tokens=3, stream=True)),
        alone0=lambda: comp(model=NAME, prompt=P2[0], max_tokens=8, temperature=0),
        alone1=lambda: comp(model=NAME, prompt=P2[1], max_tokens=8, temperature=0),
        multi=lambda: comp(model=NAME, prompt=P2, max_tokens=8, temperature=0, n=2),
        chat=lambda: chat(model=NAME, messages=MSGS, max_tokens=24, temperature=0),
        chat_stream=lambda: list(chat(model=NAME, messages=MSGS, max_tokens=24, temperature=0,
                                      stream=True, stream_options={"include_usage": True})),
        chat_parts=lambda: chat(model=NAME, messages=[{"role": "user", "content": [
            {"type": "text", "text": "What is the capital of "},
            {"type": "text", "text": "France?"}]}], max_tokens=24, temperature=0),
        chat_max=lambda: chat(model=NAME, messages=MSGS, max_tokens=3, temperature=0),
        chat_maxc=lambda: chat(model=NAME, messages=MSGS, max_completion_tokens=3, temperature=0),
        chat_lp=lambda: chat(model=NAME, messages=MSGS, max_tokens=5, temperature=0,
                             logprobs=True, top_logprobs=2, extra_body=ie),
    )
    for k, v in R.items():
        if isinstance(v, Exception):
            check(f"greedy request '{k}' succeeds", False, failed(v))
    ok = lambda *ks: all(not isinstance(R[k], Exception) for k in ks)  # noqa: E731

    greedy = ""
    if ok("full"):
        full = R["full"]
        ch, u = full.choices[0], full.usage
        greedy = ch.text
        check("completion: one choice with text", len(full.choices) == 1 and ch.index == 0 and
              ch.text and full.object == "text_completion", full.model_dump_json()[:400])
        check("completion: finish_reason stop or length", ch.finish_reason in ("stop", "length"),
              ch.finish_reason)
        check("completion: usage present and consistent",
              u is not None and u.prompt_tokens == len(ids) and u.completion_tokens > 0 and
              u.total_tokens == u.prompt_tokens + u.completion_tokens,
              f"{u}, /tokenize count {len(ids)}")
        t = extra(full, "timings") or {}
        check("completion: timings has every field",
              TIMING_KEYS <= set(t) and
              all(isinstance(t[k], (int, float)) and t[k] >= 0 for k in TIMING_KEYS), str(t))
        check("completion: timings token counts equal usage",
              u is not None and t.get("prompt_tokens") == u.prompt_tokens and
              t.get("completion_tokens") == u.completion_tokens, f"{t} {u}")
    if ok("full", "stream"):
        chunks = R["stream"]
        stext = "".join(x.choices[0].text for x in chunks if x.choices)
        check("completion: greedy streamed text equals non-streamed", stext == greedy,
              f"{stext!r} vs {greedy!r}")
        fin = [x for x in chunks if x.choices and x.choices[0].finish_reason]
        check("completion stream: one chunk has finish_reason, and it carries timings",
              len(fin) == 1 and fin[0].choices[0].finish_reason == R["full"].choices[0]
              .finish_reason and TIMING_KEYS <= set(extra(fin[0], "timings") or {}),
              str([x.model_dump() for x in fin])[:500])
    if ok("full", "ids"):
        check("completion: a prompt of token ids gives the same greedy text",
              R["ids"].choices[0].text == greedy, f"{R['ids'].choices[0].text!r} vs {greedy!r}")
    if ok("full", "echo"):
        check("completion: echo puts the prompt before the text",
              R["echo"].choices[0].text == PROMPT + greedy, repr(R["echo"].choices[0].text))
    if ok("hdr", "hdr2"):
        h = R["hdr"].headers
        vals = {k: h.get(k) for k in ("X-Lantern-Queue-Ms", "X-Lantern-Prefill-Ms",
                                      "X-Lantern-Decode-Ms", "X-Lantern-Decode-Tokens-Per-S")}

        def num(v):
            try:
                return float(v) >= 0
            except (TypeError, ValueError):
                return False
        check("headers: X-Lantern-* timings present and numeric",
              all(num(v) for v in vals.values()), str(vals))
        check("headers: X-Request-Id echoes the client's", h.get("X-Request-Id") == "my-req-42",
              str(h.get("X-Request-Id")))
        check("headers: X-Request-Id present without one sent",
              bool(R["hdr2"].headers.get("X-Request-Id")), str(dict(R["hdr2"].headers)))
        check("headers: the raw response parses with usage",
              R["hdr"].parse().usage.completion_tokens >= 1, "")
    if ok("max5"):
        r = R["max5"]
        check("completion: max_tokens 5 gives 5 tokens and finish length",
              r.usage.completion_tokens == 5 and r.choices[0].finish_reason == "length",
              str(r.usage))
    if ok("lp"):
        r = R["lp"]
        lp, n = r.choices[0].logprobs, r.usage.completion_tokens
        good = (lp is not None and len(lp.tokens or []) == n and
                len(lp.token_logprobs or []) == n and len(lp.top_logprobs or []) == n and n == 6)
        check("completion logprobs=2: tokens/token_logprobs/top_logprobs per token", good,
              str(lp)[:500])
        if good:
            check("completion logprobs: values <= 0, two alternatives, greedy token is the top",
                  all(v <= 0 for v in lp.token_logprobs) and
                  all(len(t) == 2 and all(v <= 0 for v in t.values()) for t in lp.top_logprobs)
                  and all(abs(max(t.values()) - v) < 1e-4
                          for t, v in zip(lp.top_logprobs, lp.token_logprobs)) and
                  "".join(lp.tokens) == r.choices[0].text, str(lp)[:500])
    if ok("usage"):
        chunks = R["usage"]
        last = chunks[-1] if chunks else None
        ntext = sum(1 for x in chunks if x.choices and x.choices[0].text)
        check("include_usage: last chunk has no choices and full usage",
              last is not None and last.choices == [] and last.usage is not None and
              last.usage.completion_tokens == 7 and last.usage.prompt_tokens == len(ids) and
              last.usage.total_tokens == last.usage.prompt_tokens + 7,
              last.model_dump_json() if last else "no chunks")
        check("include_usage: only the last chunk has usage, text came in 1..7 chunks",
              all(x.usage is None for x in chunks[:-1]) and 1 <= ntext <= 7,
              f"{ntext} text chunks")
    if ok("nousage"):
        check("no include_usage: no usage chunk",
              not any(x.usage is not None for x in R["nousage"]), "")
    if ok("alone0", "alone1", "multi"):
        r = R["multi"]
        alone = [R["alone0"].choices[0].text, R["alone1"].choices[0].text]
        by = {x.index: x.text for x in r.choices}
        check("2 prompts x n=2: indices 0..3", sorted(by) == [0, 1, 2, 3] and len(r.choices) == 4,
              str(sorted(by)))
        check("2 prompts x n=2: choice prompt_index*n+i is that prompt's greedy text",
              all(by.get(pi * 2 + i) == alone[pi] for pi in range(2) for i in range(2)),
              f"{by} vs {alone}")

    text = None
    if ok("chat"):
        r = R["chat"]
        ch = r.choices[0]
        text = ch.message.content
        check("chat: one assistant message",
              len(r.choices) == 1 and ch.message.role == "assistant" and text,
              r.model_dump_json()[:400])
        check("chat: object and finish_reason",
              r.object == "chat.completion" and ch.finish_reason in ("stop", "length"),
              f"{r.object} {ch.finish_reason}")
        check("chat: usage present and consistent",
              r.usage is not None and r.usage.completion_tokens > 0 and
              r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens,
              str(r.usage))
        check("chat: timings present", TIMING_KEYS <= set(extra(r, "timings") or {}),
              str(extra(r, "timings")))
        check("chat: the end-of-turn token is not in the text", "<|im_end|>" not in text,
              repr(text))
    if ok("chat", "chat_stream"):
        chunks, r = R["chat_stream"], R["chat"]
        st = "".join(x.choices[0].delta.content or "" for x in chunks if x.choices)
        check("chat: greedy streamed text equals non-streamed", st == text,
              f"{st!r} vs {text!r}")
        check("chat stream: object chat.completion.chunk, first delta has the role",
              chunks and all(x.object == "chat.completion.chunk" for x in chunks) and
              chunks[0].choices and chunks[0].choices[0].delta.role == "assistant",
              chunks[0].model_dump_json()[:300] if chunks else "none")
        fr = [x.choices[0].finish_reason for x in chunks
              if x.choices and x.choices[0].finish_reason]
        check("chat stream: one finish_reason equal to the non-streamed one",
              fr == [r.choices[0].finish_reason], str(fr))
        last = chunks[-1] if chunks else None
        check("chat stream include_usage: last chunk has no choices and the same usage",
              last is not None and last.choices == [] and last.usage is not None and
              last.usage.completion_tokens == r.usage.completion_tokens and
              last.usage.prompt_tokens == r.usage.prompt_tokens,
              last.model_dump_json() if last else "")
    if ok("chat", "chat_parts"):
        check("chat: content as text parts equals the plain string",
              R["chat_parts"].choices[0].message.content == text,
              repr(R["chat_parts"].choices[0].message.content))
    for k, label in (("chat_max", "max_tokens"), ("chat_maxc", "max_completion_tokens")):
        if ok(k):
            r = R[k]
            check(f"chat: {label} 3 gives 3 tokens and finish length",
                  r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 3,
                  f"{r.choices[0].finish_reason} {r.usage}")
    if ok("chat_lp"):
        r = R["chat_lp"]
        lp = r.choices[0].logprobs
        content = (lp.content if lp else None) or []
        check("chat logprobs: one entry per token, values <= 0, two alternatives, greedy is top",
              len(content) == r.usage.completion_tokens == 5 and
              all(e.logprob <= 0 and len(e.top_logprobs) == 2 and
                  all(t.logprob <= 0 for t in e.top_logprobs) and
                  abs(max(t.logprob for t in e.top_logprobs) - e.logprob) < 1e-4
                  for e in content) and
              "".join(e.token for e in content) == r.choices[0].message.content,
              str(lp)[:600])
    return greedy


def test_stop(c, http, srv, greedy):
    """Stop strings and stop token ids, picked from the greedy text."""
    stop, k = None, None
    for i in range(max(1, len(greedy) // 3), len(greedy) - 2):
        s = greedy[i:i + 3]
        if s.strip() and greedy.find(s) == i:
            stop, k = s, i
            break
    if stop is None:
        check("stop: the greedy text is long enough to pick a stop string", False, repr(greedy))
        return
    comp = c.completions.create
    R = par(
        stop=lambda: comp(model=NAME, prompt=PROMPT, max_tokens=12, temperature=0, stop=stop),
        stop_list=lambda: list(comp(model=NAME, prompt=PROMPT, max_tokens=12, temperature=0,
                                    stop=["zzzqqq", stop], stream=True)),
        keep=lambda: comp(model=NAME, prompt=PROMPT, max_tokens=12, temperature=0, stop=stop,
                          extra_body={"include_stop_str_in_output": True}),
        lp=lambda: comp(model=NAME, prompt=PROMPT, max_tokens=3, temperature=0, logprobs=1,
                        extra_body={"ignore_eos": True}),
    )
    for key, v in R.items():
        if isinstance(v, Exception):
            check(f"stop request '{key}' succeeds", False, failed(v))
    if not isinstance(R["stop"], Exception):
        r = R["stop"]
        check(f"stop {stop!r}: text ends right before it, finish stop",
              r.choices[0].text == greedy[:k] and r.choices[0].finish_reason == "stop",
              f"{r.choices[0].text!r} {r.choices[0].finish_reason} (full {greedy!r})")
    if not isinstance(R["stop_list"], Exception):
        chunks = R["stop_list"]
        st = "".join(x.choices[0].text for x in chunks if x.choices)
        fr = [x.choices[0].finish_reason for x in chunks
              if x.choices and x.choices[0].finish_reason]
        check("stop (list, streaming): same cut, finish stop",
              st == greedy[:k] and fr == ["stop"], f"{st!r} {fr}")
    if not isinstance(R["keep"], Exception):
        r = R["keep"]
        check("stop: include_stop_str_in_output keeps the stop string",
              r.choices[0].text == greedy[:k + len(stop)], repr(r.choices[0].text))
    if isinstance(R["lp"], Exception):
        return
    toks = R["lp"].choices[0].logprobs.tokens if R["lp"].choices[0].logprobs else []
    if len(toks) >= 2:
        second = http.post(srv.base + "/tokenize",
                           json={"prompt": toks[1], "add_special_tokens": False}).json()["tokens"]
        r = comp(model=NAME, prompt=PROMPT, max_tokens=12, temperature=0,
                 extra_body={"stop_token_ids": second[:1]})
        check("stop_token_ids: stops at that token with finish stop",
              r.choices[0].finish_reason == "stop" and r.usage.completion_tokens <= 2 and
              greedy.startswith(r.choices[0].text), f"{r.choices[0].text!r} {r.usage}")


def test_seed(c, http, srv):
    """Seeded sampling, reproducible across batch shapes (the server runs --batch-invariant):
    alone, beside other requests, and as choice k of n (seed + k)."""
    comp = c.completions.create
    ie = {"ignore_eos": True}

    def sampled(seed):
        return comp(model=NAME, prompt="Once upon a time", max_tokens=8, temperature=1,
                    seed=seed, extra_body=ie).choices[0].text
    a, b = sampled(1234), sampled(1234)
    check("seed: same seed at temperature 1 gives the same text", a == b, f"{a!r} vs {b!r}")
    R = par(**{f"s{s}": (lambda s=s: sampled(s)) for s in (1, 2, 3)})
    others = [R[k] for k in R]
    check("seed: different seeds give different texts",
          any(isinstance(o, str) and o != a for o in others), f"{a!r} {others!r}")
    R = par(seeded=lambda: sampled(1234),
            **{f"g{i}": (lambda i=i: comp(model=NAME, prompt=f"Unrelated prompt {i} " * (i + 1),
                                          max_tokens=8, temperature=0).choices[0].text)
               for i in range(6)})
    check("seed: the same text when batched with 6 other requests", R["seeded"] == a,
          f"{R['seeded']!r} vs {a!r}")

    def n3(seed, stream=False):
        return comp(model=NAME, prompt="Once upon a time", max_tokens=8, temperature=1,
                    seed=seed, n=3, stream=stream, extra_body=ie)
    r = n3(1233)
    check("n=3: three choices with indices 0..2",
          sorted(x.index for x in r.choices) == [0, 1, 2], str([x.index for x in r.choices]))
    check("n=3: usage counts every choice's tokens", r.usage.completion_tokens == 24,
          str(r.usage))
    by = {x.index: x.text for x in r.choices}
    r2 = n3(1234)
    by2 = {x.index: x.text for x in r2.choices}
    check("n=3 with seed S: choices 1, 2 equal choices 0, 1 of seed S+1 (choice i uses seed+i)",
          by.get(1) == by2.get(0) and by.get(2) == by2.get(1), f"{by} vs {by2}")
    st = {}
    for x in n3(1233, stream=True):
        for cc in x.choices:
            st[cc.index] = st.get(cc.index, "") + cc.text
    check("n=3 streaming with the same seed gives the same three texts", st == by,
          f"{st} vs {by}")
    r = c.chat.completions.create(model=NAME, messages=MSGS, max_tokens=8, temperature=1, n=3,
                                  seed=7)
    check("chat n=3: indices 0..2", sorted(x.index for x in r.choices) == [0, 1, 2],
          str([x.index for x in r.choices]))


# ---- 128 concurrent streams ----

PROMPTS = [
    "The capital of France is",
    "Once upon a time, in a small village by the sea,",
    "def fibonacci(n):",
    "List three colours:",
    "The quick brown fox jumps over the lazy dog. " * 6,
    "Water boils at",
    "In 1969, the first humans landed on the Moon. The mission was called",
    "Q: What is two plus two?\nA:",
]


def test_concurrency(c, http, srv, nclients=128, ntok=16):
    refs = []
    for p in PROMPTS:
        r = c.completions.create(model=NAME, prompt=p, max_tokens=ntok, temperature=0,
                                 extra_body={"ignore_eos": True})
        refs.append(r.choices[0].text)
    stop_sampling = threading.Event()
    seen = {"running": 0, "waiting": 0}

    def sample():
        with httpx.Client(timeout=30) as h:
            while not stop_sampling.is_set():
                try:
                    t = h.get(srv.base + "/metrics").text
                    seen["running"] = max(seen["running"],
                                          metric(t, "lantern:num_requests_running") or 0)
                    seen["waiting"] = max(seen["waiting"],
                                          metric(t, "lantern:num_requests_waiting") or 0)
                except httpx.HTTPError:
                    pass
                stop_sampling.wait(0.2)
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()

    async def run():
        ac = openai.AsyncOpenAI(base_url=srv.base + "/v1", api_key="unused", max_retries=0,
                                timeout=300)

        async def one(i):
            try:
                s = await ac.completions.create(
                    model=NAME, prompt=PROMPTS[i % len(PROMPTS)], max_tokens=ntok, temperature=0,
                    stream=True, stream_options={"include_usage": True},
                    extra_body={"ignore_eos": True})
                text, usage, fin = "", None, None
                async for ch in s:
                    if ch.choices:
                        text += ch.choices[0].text
                        fin = ch.choices[0].finish_reason or fin
                    if ch.usage is not None:
                        usage = ch.usage
                return text, usage, fin, None
            except Exception as e:  # noqa: BLE001 - reported per client
                return None, None, None, repr(e)
        try:
            return await asyncio.gather(*[one(i) for i in range(nclients)])
        finally:
            await ac.close()
    t0 = time.time()
    results = asyncio.run(run())
    took = time.time() - t0
    stop_sampling.set()
    sampler.join(5)
    errs = [r[3] for r in results if r[3]]
    check(f"{nclients} concurrent streams: all finish without error", not errs,
          f"{len(errs)} errors, first {errs[:1]}")
    same = sum(r[0] == refs[i % len(PROMPTS)] for i, r in enumerate(results))
    bad = [(i, r[0], refs[i % len(PROMPTS)]) for i, r in enumerate(results)
           if r[0] != refs[i % len(PROMPTS)]]
    check(f"{nclients} concurrent streams: each text equals the prompt run alone",
          same == nclients, f"{same}/{nclients} equal; first differing {bad[:1]}")
    okusage = sum(r[1] is not None and r[1].completion_tokens == ntok and r[2] == "length"
                  for r in results)
    check(f"{nclients} concurrent streams: completion_tokens {ntok} and finish length each",
          okusage == nclients, f"{okusage}/{nclients}")
    print(f"     ({nclients} streams in {took:.1f} s; max running {seen['running']:.0f}, "
          f"max waiting {seen['waiting']:.0f})", flush=True)
    check("concurrent streams: more than one sequence ran at once (batching)",
          seen["running"] > 1, str(seen))
    check("concurrent streams: never more than --max-num-seqs (64) running",
          seen["running"] <= 64, str(seen))


# ---- client disconnect ----

def wait_idle(http, base, idle, timeout):
    """Polls /metrics until nothing runs or waits and (idle not None) the KV usage is idle."""
    t0, last = time.time(), ""
    while time.time() - t0 < timeout:
        last = http.get(base + "/metrics").text
        if (idle is None or metric(last, "lantern:kv_cache_usage_perc") == idle) and \
                metric(last, "lantern:num_requests_running") == 0 and \
                metric(last, "lantern:num_requests_waiting") == 0:
            return True, time.time() - t0, last
        time.sleep(0.1)
    return False, time.time() - t0, last


def raw_post(base, path, body):
    """Sends a POST on a raw socket and returns the socket (the caller reads and closes)."""
    payload = json.dumps(body).encode()
    host, port = base.rsplit("/", 1)[1].rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=120)
    s.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              f"Content-Length: {len(payload)}\r\n\r\n".encode() + payload)
    return s


def read_until(s, marker, count=1):
    buf = b""
    while buf.count(marker) < count:
        try:
            d = s.recv(65536)
        except OSError:
            break
        if not d:
            break
        buf += d
    return buf


def test_disconnect(c, http, srv):
    base = srv.base
    ok, _, t = wait_idle(http, base, None, 30)
    idle = metric(t, "lantern:kv_cache_usage_perc")
    disc0 = metric(t, "lantern:client_disconnects_total")
    check("idle: nothing running or waiting, kv_cache_usage_perc readable",
          ok and idle is not None, t[:300])
    body = {"model": NAME,
            "prompt": "Tell me a long story about a lighthouse keeper. " * (2 if TINY else 30),
            "max_tokens": LONG_TOKENS, "ignore_eos": True, "temperature": 0, "stream": True}

    # 1: httpx reads a few chunks, then closes the stream (FIN)
    during = None
    with httpx.Client(timeout=120) as h:
        with h.stream("POST", base + "/v1/completions", json=body) as resp:
            got = 0
            for line in resp.iter_lines():
                if line.startswith("data: {"):
                    got += 1
                    if got == 3:
                        during = metric(http.get(base + "/metrics").text,
                                        "lantern:kv_cache_usage_perc")
                    if got >= 4:
                        break
    check("disconnect (close): the stream had started and used KV blocks",
          got >= 4 and during is not None and idle is not None and during > idle,
          f"{got} chunks, kv during {during}, idle {idle}")
    ok, secs, t = wait_idle(http, base, idle, 5.0)
    check("disconnect (close): kv usage back to idle, nothing running within 5 s", ok,
          f"after {secs:.1f} s: kv {metric(t, 'lantern:kv_cache_usage_perc')} running "
          f"{metric(t, 'lantern:num_requests_running')}")

    # 2: a raw socket reads a few chunks, then resets the connection (RST)
    s = raw_post(base, "/v1/completions", body)
    buf = read_until(s, b"data: {", 3)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
    check("disconnect (reset): the stream had started", buf.count(b"data: {") >= 3,
          buf[:300].decode(errors="replace"))
    ok, secs, t = wait_idle(http, base, idle, 5.0)
    check("disconnect (reset): kv usage back to idle and nothing running within 5 s", ok,
          f"after {secs:.1f} s: kv {metric(t, 'lantern:kv_cache_usage_perc')} running "
          f"{metric(t, 'lantern:num_requests_running')}")
    disc1 = metric(t, "lantern:client_disconnects_total")
    if disc0 is not None:
        check("disconnect: lantern:client_disconnects_total counted both", disc1 == disc0 + 2,
              f"{disc0} -> {disc1}")

    # 3: a non-streaming request whose client goes away mid-generation is aborted too
    s = raw_post(base, "/v1/completions", dict(body, stream=False))
    t0 = time.time()
    while time.time() - t0 < 60:
        if (metric(http.get(base + "/metrics").text, "lantern:kv_cache_usage_perc") or 0) > idle:
            break
        time.sleep(0.1)
    time.sleep(0.5)
    s.close()
    ok, secs, t = wait_idle(http, base, idle, 5.0)
    check("disconnect (non-streaming): kv usage back to idle, nothing running within 5 s", ok,
          f"after {secs:.1f} s: kv {metric(t, 'lantern:kv_cache_usage_perc')} running "
          f"{metric(t, 'lantern:num_requests_running')}")

    r = c.completions.create(model=NAME, prompt="The capital of France is", max_tokens=4,
                             temperature=0)
    check("after the disconnects the server still serves",
          r.usage.completion_tokens >= 1 and r.choices[0].text, r.model_dump_json()[:300])


def main():
    global TINY, LONG_TOKENS
    model = None if os.environ.get("LANTERN_SERVE_TINY") == "1" else default_model()
    sections = ["endpoints", "greedy", "stop", "seed", "concurrency", "disconnect"]
    if not model:
        TINY, LONG_TOKENS = True, 400
        sections = ["concurrency", "disconnect"]
        model = ltcheck.tiny_model(tempfile.mkdtemp(prefix="lantern-serve-"))
        print(f"default model absent or LANTERN_SERVE_TINY=1: {model}, sections {sections}")
    # one compute thread: ctest runs tests side by side on small machines, and an oversubscribed
    # worker is many times slower than one thread
    srv = Server(model, "--served-model-name", NAME, "--threads", "1", "--batch-invariant")
    if not srv.base:
        print("FAIL the server did not start: " + srv.log())
        srv.stop()
        return 1
    pid = srv.p.pid
    c = openai.OpenAI(base_url=srv.base + "/v1", api_key="unused", max_retries=0, timeout=300)
    http = httpx.Client(timeout=60)
    t0 = time.time()
    try:
        greedy = ""
        for name, fn in [("endpoints", test_endpoints), ("greedy", test_greedy),
                         ("stop", test_stop), ("seed", test_seed),
                         ("concurrency", test_concurrency), ("disconnect", test_disconnect)]:
            if name not in sections or (len(sys.argv) > 1 and name not in sys.argv[1:]):
                continue
            t = time.time()
            try:
                if name == "stop":
                    fn(c, http, srv, greedy)
                elif name == "greedy":
                    greedy = fn(c, http, srv)
                else:
                    fn(c, http, srv)
            except Exception as e:  # noqa: BLE001 - one section's crash must not hide the rest
                check(f"{name}: ran without an exception", False,
                      f"{e!r} {getattr(e, 'body', '')} server log: {srv.log(800)}")
            print(f"     ({name}: {time.time() - t:.1f} s)", flush=True)
        # SIGTERM with a stream in flight: the stream is ended properly, the server exits 0
        s = raw_post(srv.base, "/v1/completions",
                     {"model": NAME, "prompt": "Tell me a story.", "max_tokens": LONG_TOKENS,
                      "ignore_eos": True, "stream": True})
        head = read_until(s, b"data: {", 2)
        srv.p.send_signal(signal.SIGTERM)
        s.settimeout(30)
        rest = read_until(s, b"data: [DONE]")
        s.close()
        # raw bytes: after [DONE] only chunked-encoding framing may follow (the last-chunk
        # "0\r\n\r\n" arrives in the same read or not, depending on timing)
        done_at = rest.rfind(b"data: [DONE]")
        after = rest[done_at + len(b"data: [DONE]"):] if done_at >= 0 else b"x"
        check("SIGTERM with a stream in flight: the stream ends with data: [DONE]",
              head.count(b"data: {") >= 2 and re.fullmatch(rb"\s*(0\s*)?", after) is not None,
              (head + rest)[-400:].decode(errors="replace"))
    finally:
        http.close()
        c.close()
        rc = srv.stop()
    check("SIGTERM: the server exits 0", rc == 0, f"status {rc}: {srv.log(800)}")
    time.sleep(0.2)
    left = glob.glob(f"/dev/shm/lantern-{pid}-*")
    check("SIGTERM: no shared memory left", not left, str(left))
    print(f"     (total {time.time() - t0:.1f} s)")
    return ltcheck.summary()


if __name__ == "__main__":
    sys.exit(main())
