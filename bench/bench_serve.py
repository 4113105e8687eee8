#!/usr/bin/env python3
"""bench_serve.py — serving benchmark for OpenAI-compatible HTTP servers (in the spirit of
`vllm bench serve`), and lantern's `serve` against llama.cpp's server on the same GGUF.

Client mode measures one running server: streaming /v1/completions requests with random-word
prompts of about --input-len tokens and --output-len output tokens (EOS ignored), sent at fixed
concurrency (--concurrency N) or at a Poisson request rate (--request-rate R, optionally capped
by --max-concurrency). Per request: TTFT, the gaps between streamed chunks (ITL), TPOT, e2e
latency, output tokens. Prints throughput and latency percentiles.

    .venv/bin/python bench/bench_serve.py --base-url http://127.0.0.1:8000 --concurrency 8

Compare mode (--compare) starts `build/lantern serve` and llama.cpp's own `llama-server` (built
by bench/build_llama_cpp.sh; `-np C -cb`: C slots, continuous batching) in turn, one at a time,
on the same GGUF with the same thread count, runs the same workload on each at every
concurrency in --concurrency (reps interleaved, alternating which side goes first), and prints
one table of medians: output tok/s, TTFT and ITL p50/p99, the resident memory of each server's
process tree (idle and peak), for both, the ratios, the machine and the commit.

    tools/setup.sh --bench && .venv/bin/python bench/bench_serve.py --compare --threads 2

Only the standard library is needed for the client (HTTP/1.1 over asyncio streams); tqdm draws
the progress bar when it is installed. See bench/README.md for what is measured and how.
"""
import argparse
import asyncio
import datetime
import json
import math
import os
import platform
import random
import re
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from urllib.parse import urlsplit

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_generate import (PROMPT_TEXT, ROOT, cpu_isa, cpu_model, git_commit,  # noqa: E402
                            llama_bin_dir, n_cores, peer_version, prepare_lantern)

# ---- HTTP/1.1 over asyncio streams ----

# One connection per request ("Connection: close"), as a fresh client would open: both servers
# pay the same loopback connect (tens of µs), and there is no pool whose state could differ
# between runs. Responses may be chunked, sized by Content-Length, or end at EOF.


async def http_open(method, url, body=None, headers=None):
    """Sends one request; returns (status, lower-cased headers, reader, writer). The caller
    reads the body with http_body() and closes the writer."""
    u = urlsplit(url)
    tls = u.scheme == "https"
    port = u.port or (443 if tls else 80)
    reader, writer = await asyncio.open_connection(
        u.hostname, port, ssl=ssl.create_default_context() if tls else None, limit=1 << 20)
    target = (u.path or "/") + (f"?{u.query}" if u.query else "")
    data = b"" if body is None else json.dumps(body).encode()
    lines = [f"{method} {target} HTTP/1.1", f"Host: {u.netloc}", "Connection: close",
             "User-Agent: lantern-bench-serve", "Accept: */*"]
    if body is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(data)}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + data)
    await writer.drain()
    status_line = await reader.readline()
    parts = status_line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/"):
        writer.close()
        raise ConnectionError(f"no HTTP response (got {status_line[:80]!r})")
    hdrs = {}
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        k, _, v = line.decode("latin-1").partition(":")
        hdrs[k.strip().lower()] = v.strip()
    return int(parts[1]), hdrs, reader, writer


async def http_body(reader, hdrs):
    """Yields the response body in the pieces in which it arrives."""
    if "chunked" in hdrs.get("transfer-encoding", "").lower():
        while True:
            size_line = await reader.readline()
            if not size_line:
                raise ConnectionError("connection closed inside a chunked body")
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return
            yield await reader.readexactly(size)
            await reader.readexactly(2)
    elif "content-length" in hdrs:
        left = int(hdrs["content-length"])
        while left > 0:
            piece = await reader.read(min(left, 1 << 16))
            if not piece:
                raise ConnectionError("connection closed before Content-Length bytes")
            left -= len(piece)
            yield piece
    else:
        while piece := await reader.read(1 << 16):
            yield piece


def close_writer(writer):
    try:
        writer.close()
    except Exception:  # noqa: BLE001  (already closed by the peer)
        pass


async def http_json(method, url, body=None, headers=None, timeout=30.0):
    """A whole request; returns (status, parsed JSON or None, raw body)."""
    async def go():
        status, hdrs, reader, writer = await http_open(method, url, body, headers)
        try:
            raw = b"".join([p async for p in http_body(reader, hdrs)])
        finally:
            close_writer(writer)
        try:
            return status, json.loads(raw) if raw else None, raw
        except ValueError:
            return status, None, raw
    return await asyncio.wait_for(go(), timeout)


# ---- prompts ----

# Random words from bench_generate's English text: real words, so any tokenizer cuts them much
# as it cuts prose, and random order, so no two prompts share a prefix (no prefix-cache hits).
# With a tokenizer, each word's token count is measured once (with and without a leading space),
# and prompts are filled word by word to the asked length. For byte-level BPE tokenizers
# (SmolLM2, Llama 3, Qwen) the pre-tokenizer splits text at word boundaries, so the counts add up
# exactly; for SentencePiece ones they add up approximately.
WORDS = sorted(set(re.findall(r"[a-z]+", PROMPT_TEXT.lower())))


class WordCounts:
    """Tokens per word, measured with count(text) -> number of tokens the server would make."""

    def __init__(self, spaced, bare, exact):
        self.spaced = spaced  # " word" -> tokens
        self.bare = bare      # "word" at the start of a prompt -> tokens
        self.exact = exact    # False: no tokenizer, one token per word assumed

    @staticmethod
    def build(count):
        # Any BOS the tokenizer adds is measured away: " the the" - " the" is one word's cost.
        c1, c2 = count(" the"), count(" the the")
        offset = c1 - (c2 - c1)
        spaced = {w: count(" " + w) - offset for w in WORDS}
        bare = {w: count(w) - offset for w in WORDS}
        return WordCounts(spaced, bare, True)

    @staticmethod
    async def build_async(count):
        c1, c2 = await count(" the"), await count(" the the")
        offset = c1 - (c2 - c1)
        spaced = {w: await count(" " + w) - offset for w in WORDS}
        bare = {w: await count(w) - offset for w in WORDS}
        return WordCounts(spaced, bare, True)

    @staticmethod
    def guess():
        return WordCounts({w: 1 for w in WORDS}, {w: 1 for w in WORDS}, False)


def uniform_len(rng, mean, ratio):
    lo, hi = max(1, math.floor(mean * (1 - ratio))), max(1, math.ceil(mean * (1 + ratio)))
    return rng.randint(lo, hi)


def make_requests(n, input_len, output_len, range_ratio, counts, seed):
    """n requests: (prompt, prompt tokens, max_tokens), lengths uniform in
    [len * (1 - range_ratio), len * (1 + range_ratio)] as in vLLM's random dataset."""
    rng = random.Random(seed)
    ones = [w for w in WORDS if counts.spaced[w] == 1]
    first_words = [w for w in WORDS if counts.bare[w] >= 1]
    out = []
    for _ in range(n):
        want = uniform_len(rng, input_len, range_ratio)
        first = rng.choice(first_words)
        words, total = [first], counts.bare[first]
        while total < want:
            w = rng.choice(WORDS)
            if total + counts.spaced[w] > want and ones:
                w = rng.choice(ones)
            words.append(w)
            total += counts.spaced[w]
        out.append({"prompt": " ".join(words), "prompt_len": total,
                    "max_tokens": uniform_len(rng, output_len, range_ratio)})
    return out


def warmup_requests(n, args, counts):
    """Short requests with prompts of their own (another seed): a warm-up that reused a measured
    prompt would give that request a prefix-cache hit."""
    return make_requests(n, args.input_len, min(8, args.output_len), 0.0, counts,
                         args.seed + 7919)


# ---- one streamed request ----


class Target:
    """Where and how to send requests: URL, model, headers, fixed payload fields."""

    def __init__(self, base_url, endpoint, model, api_key, extra_body, timeout):
        base = base_url.rstrip("/")
        if base.endswith("/v1") and endpoint.startswith("/v1/"):
            base = base[:-3]
        self.base = base
        self.url = base + endpoint
        self.chat = endpoint.rstrip("/").endswith("chat/completions")
        self.model = model
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.extra_body = extra_body or {}
        self.timeout = timeout


def payload(target, req, temperature, ignore_eos):
    body = {"model": target.model, "max_tokens": req["max_tokens"], "temperature": temperature,
            "stream": True, "stream_options": {"include_usage": True}}
    if target.chat:
        body["messages"] = [{"role": "user", "content": req["prompt"]}]
    else:
        body["prompt"] = req["prompt"]
    if ignore_eos:
        body["ignore_eos"] = True
    body.update(target.extra_body)
    return body


async def stream_request(target, req, temperature, ignore_eos):
    """One streamed completion. TTFT = send to the first chunk with non-empty text; ITL = the
    gap before each later chunk with non-empty text (per chunk, as vLLM counts it: a chunk
    carrying k tokens is one gap); e2e = send to the end of the stream. Output tokens come from
    the final usage chunk when the server sends one, else one per text chunk."""
    rec = {"prompt_len": req["prompt_len"], "max_tokens": req["max_tokens"], "ok": False,
           "ttft": None, "itl": [], "latency": None, "chunks": 0, "output_tokens": 0,
           "usage": None, "finish_reason": None, "timings": None, "error": None}
    body = payload(target, req, temperature, ignore_eos)
    st = time.perf_counter()
    last = st

    def on_event(data, now):  # returns True at the end of the stream
        nonlocal last
        if data == b"[DONE]":
            return True
        obj = json.loads(data)
        if obj.get("error"):
            rec["error"] = f"error event: {json.dumps(obj['error'])[:300]}"
            return True
        for ch in obj.get("choices") or []:
            text = (ch.get("delta") or {}).get("content") if target.chat else ch.get("text")
            if text:
                if rec["ttft"] is None:
                    rec["ttft"] = now - st
                else:
                    rec["itl"].append(now - last)
                last = now
                rec["chunks"] += 1
            if ch.get("finish_reason"):
                rec["finish_reason"] = ch["finish_reason"]
            if ch.get("timings"):
                rec["timings"] = ch["timings"]
        if obj.get("timings"):
            rec["timings"] = obj["timings"]
        if obj.get("usage"):
            rec["usage"] = obj["usage"]
        return False

    async def go():
        status, hdrs, reader, writer = await http_open("POST", target.url, body, target.headers)
        try:
            if status != 200:
                raw = b"".join([p async for p in http_body(reader, hdrs)])
                rec["error"] = f"HTTP {status}: {raw[:300].decode('utf-8', 'replace')}"
                return
            buf, data_lines, done = b"", [], False
            async for piece in http_body(reader, hdrs):
                now = time.perf_counter()
                buf += piece
                while not done:
                    nl = buf.find(b"\n")
                    if nl < 0:
                        break
                    line, buf = buf[:nl].rstrip(b"\r"), buf[nl + 1:]
                    if line:
                        field, _, value = line.partition(b":")
                        if field == b"data":  # other fields and ": ping" comments are skipped
                            data_lines.append(value[1:] if value.startswith(b" ") else value)
                    elif data_lines:
                        done = on_event(b"\n".join(data_lines), now)
                        data_lines = []
                if done:
                    break
            if data_lines and not done:  # a last event without its blank line
                on_event(b"\n".join(data_lines), time.perf_counter())
        finally:
            close_writer(writer)

    try:
        await asyncio.wait_for(go(), target.timeout)
    except asyncio.TimeoutError:
        rec["error"] = f"timed out after {target.timeout:g} s"
    except (OSError, ConnectionError, ValueError, asyncio.IncompleteReadError) as e:
        rec["error"] = f"{type(e).__name__}: {e}"
    rec["latency"] = time.perf_counter() - st
    if rec["error"] is None:
        if rec["ttft"] is None:
            rec["error"] = "no text in the stream"
        elif rec["finish_reason"] is None:
            # llama_cpp.server with interrupt_requests on ends a stream this way when another
            # request arrives: [DONE] without a finish_reason.
            rec["error"] = "stream ended without a finish_reason"
    if rec["usage"] and rec["usage"].get("completion_tokens") is not None:
        rec["output_tokens"] = rec["usage"]["completion_tokens"]
        rec["prompt_tokens"] = rec["usage"].get("prompt_tokens", req["prompt_len"])
    else:
        rec["output_tokens"] = rec["chunks"]
        rec["prompt_tokens"] = req["prompt_len"]
    rec["ok"] = rec["error"] is None
    return rec


# ---- the run ----


class Progress:
    """tqdm when installed, else a counter on stderr."""

    def __init__(self, total, desc, enabled):
        self.bar, self.total, self.n, self.desc, self.enabled = None, total, 0, desc, enabled
        if not enabled:
            return
        try:
            from tqdm import tqdm
            self.bar = tqdm(total=total, desc=desc, file=sys.stderr, leave=False,
                            dynamic_ncols=True)
        except ImportError:
            pass

    def update(self):
        self.n += 1
        if self.bar is not None:
            self.bar.update(1)
        elif self.enabled:
            print(f"\r{self.desc}: {self.n}/{self.total}", end="", file=sys.stderr, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()
        elif self.enabled:
            print("\r" + " " * (len(self.desc) + 24) + "\r", end="", file=sys.stderr, flush=True)


async def run_benchmark(target, reqs, request_rate, burstiness, max_concurrency, temperature,
                        ignore_eos, seed, desc="requests", progress=True):
    """Sends reqs with gamma-distributed gaps (burstiness 1: Poisson) at request_rate per second
    (inf: all at once), at most max_concurrency in flight (None: no cap). Returns (per-request
    records in request order, wall time from the first send to the last response)."""
    rng = random.Random(seed)
    sem = asyncio.Semaphore(max_concurrency) if max_concurrency else None
    bar = Progress(len(reqs), desc, progress)

    async def one(req):
        if sem is None:
            rec = await stream_request(target, req, temperature, ignore_eos)
        else:
            async with sem:
                rec = await stream_request(target, req, temperature, ignore_eos)
        bar.update()
        return rec

    t0 = time.perf_counter()
    tasks = []
    for i, req in enumerate(reqs):
        tasks.append(asyncio.create_task(one(req)))
        if math.isfinite(request_rate) and i + 1 < len(reqs):
            await asyncio.sleep(rng.gammavariate(burstiness, 1.0 / (request_rate * burstiness)))
    recs = await asyncio.gather(*tasks)
    duration = time.perf_counter() - t0
    bar.close()
    return list(recs), duration


# ---- metrics ----


def percentile(xs, p):
    """Linear interpolation between closest ranks (numpy.percentile's default)."""
    if not xs:
        return float("nan")
    s = sorted(xs)
    k = (len(s) - 1) * p / 100.0
    lo = math.floor(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def dist_ms(xs, percentiles):
    xs = [x * 1000.0 for x in xs]
    d = {"mean": statistics.fmean(xs) if xs else float("nan"),
         "std": statistics.pstdev(xs) if xs else float("nan")}
    for p in percentiles:
        d[f"p{p:g}"] = percentile(xs, p)
    return d


def summarize(recs, duration, percentiles):
    ok = [r for r in recs if r["ok"]]
    n_in = sum(r["prompt_tokens"] for r in ok)
    n_out = sum(r["output_tokens"] for r in ok)
    chunks = sum(r["chunks"] for r in ok)
    tpot = [(r["latency"] - r["ttft"]) / (r["output_tokens"] - 1) for r in ok
            if r["output_tokens"] > 1]
    errors = {}
    for r in recs:
        if not r["ok"]:
            errors[r["error"]] = errors.get(r["error"], 0) + 1
    return {
        "completed": len(ok), "failed": len(recs) - len(ok), "duration_s": duration,
        "total_input_tokens": n_in, "total_output_tokens": n_out,
        "mean_output_tokens": n_out / len(ok) if ok else 0.0,
        "short_outputs": sum(1 for r in ok if r["output_tokens"] < r["max_tokens"]),
        "tokens_per_chunk": n_out / chunks if chunks else float("nan"),
        "output_tokens_from": "usage" if ok and all(r["usage"] for r in ok) else "chunks",
        "request_throughput": len(ok) / duration,
        "output_throughput": n_out / duration,
        "total_token_throughput": (n_in + n_out) / duration,
        "ttft_ms": dist_ms([r["ttft"] for r in ok], percentiles),
        "itl_ms": dist_ms([g for r in ok for g in r["itl"]], percentiles),
        "tpot_ms": dist_ms(tpot, percentiles),
        "e2el_ms": dist_ms([r["latency"] for r in ok], percentiles),
        "errors": errors,
    }


def print_summary(s, percentiles, title="Serving Benchmark Result"):
    w = 50
    print(f"{' ' + title + ' ':=^{w}}")
    line = lambda k, v: print(f"{k:<40}{v:>10}")  # noqa: E731
    line("Successful requests:", s["completed"])
    line("Failed requests:", s["failed"])
    line("Benchmark duration (s):", f"{s['duration_s']:.2f}")
    line("Total input tokens:", s["total_input_tokens"])
    line(f"Total output tokens ({s['output_tokens_from']}):", s["total_output_tokens"])
    line("Requests cut short (< max_tokens):", s["short_outputs"])
    line("Output tokens per chunk:", f"{s['tokens_per_chunk']:.2f}")
    line("Request throughput (req/s):", f"{s['request_throughput']:.2f}")
    line("Output token throughput (tok/s):", f"{s['output_throughput']:.2f}")
    line("Total token throughput (tok/s):", f"{s['total_token_throughput']:.2f}")
    for key, name in (("ttft_ms", "Time to First Token"), ("tpot_ms",
                      "Time per Output Token (excl. 1st token)"), ("itl_ms",
                      "Inter-token Latency (per chunk)"), ("e2el_ms", "End-to-end Latency")):
        print(f"{name:-^{w}}")
        short = key.split("_")[0].upper()
        line(f"Mean {short} (ms):", f"{s[key]['mean']:.2f}")
        for p in percentiles:
            line(f"P{p:g} {short} (ms):", f"{s[key][f'p{p:g}']:.2f}")
    print("=" * w)
    for err, n in s["errors"].items():
        print(f"  {n} x {err}", file=sys.stderr)


# ---- client mode ----


# The tokenize dialects, tried in turn: (path, request body for text, special tokens on/off).
# lantern and vLLM take {"prompt"}; llama.cpp's llama-server takes {"content"} (and answers
# {"prompt"} with 200 and an empty token list, so a probe must see tokens, not just a 200);
# llama-cpp-python's llama_cpp.server has /extras/tokenize. All answer {"tokens": [...]}, whose
# items are ids (or, with pieces asked for, objects).
TOKENIZE_DIALECTS = [
    ("/tokenize", lambda t, special: {"prompt": t, "add_special_tokens": special}),
    ("/tokenize", lambda t, special: {"content": t, "add_special": special}),
    ("/extras/tokenize", lambda t, special: {"input": t}),
]


def tokens_of(obj):
    """The token list of a tokenize answer, or None when it has none."""
    toks = obj.get("tokens") if isinstance(obj, dict) else None
    return toks if isinstance(toks, list) else None


async def find_tokenizer(target):
    """The server's own tokenizer: returns (async count(text, special) -> number of tokens,
    the endpoint it uses), or (None, None) when no dialect gives tokens for a word."""
    for path, make in TOKENIZE_DIALECTS:
        try:
            status, obj, _ = await http_json("POST", target.base + path, make("the", False),
                                             target.headers, timeout=10)
        except (OSError, ConnectionError, asyncio.TimeoutError):
            continue
        if status != 200 or not tokens_of(obj):
            continue

        async def count(text, special=False, path=path, make=make):
            status, obj, raw = await http_json("POST", target.base + path, make(text, special),
                                               target.headers)
            toks = tokens_of(obj)
            if status != 200 or toks is None:
                raise RuntimeError(f"{path} answered {status}: {raw[:200]!r}")
            return len(toks)
        field = next(iter(make("", False)))
        return count, f"{path} {{{field!r}}}"
    return None, None


async def tokenizer_counts(target):
    """Word token counts from the server's own tokenizer; (None, None) when it has none."""
    count, how = await find_tokenizer(target)
    if count is None:
        return None, None
    return await WordCounts.build_async(count), how


async def first_model(target):
    status, obj, raw = await http_json("GET", target.base + "/v1/models", None, target.headers)
    if status != 200 or not obj or not obj.get("data"):
        raise RuntimeError(f"GET /v1/models answered {status}: {raw[:200]!r}; pass --model")
    return obj["data"][0]["id"]


async def client_main(args, percentiles):
    target = Target(args.base_url, args.endpoint, args.model, args.api_key, args.extra_body,
                    args.timeout)
    if target.model is None:
        target.model = await first_model(target)
    counts, how = await tokenizer_counts(target)
    if counts is None:
        print("bench_serve: the server has no tokenize endpoint: one token per word assumed, "
              "prompt lengths are approximate", file=sys.stderr)
        counts = WordCounts.guess()
    reqs = make_requests(args.num_prompts, args.input_len, args.output_len, args.range_ratio,
                         counts, args.seed)
    max_conc = args.concurrency or args.max_concurrency
    rate = float("inf") if args.concurrency else args.request_rate
    print(f"bench_serve: {target.url}, model {target.model}, {len(reqs)} prompts, input "
          f"{args.input_len} / output {args.output_len} tokens (range ratio {args.range_ratio:g}"
          f"; prompt lengths from {how or 'a guess'}), request rate {rate:g}/s, max concurrency "
          f"{max_conc or 'unlimited'}", file=sys.stderr, flush=True)
    if args.warmup:
        await run_benchmark(target, warmup_requests(args.warmup, args, counts), float("inf"),
                            1.0, 1, args.temperature, args.ignore_eos, args.seed,
                            progress=False)
    recs, duration = await run_benchmark(target, reqs, rate, args.burstiness, max_conc,
                                         args.temperature, args.ignore_eos, args.seed,
                                         progress=not args.disable_tqdm)
    s = summarize(recs, duration, percentiles)
    print_summary(s, percentiles)
    if args.json:
        out = {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
               "url": target.url, "model": target.model, "num_prompts": len(reqs),
               "input_len": args.input_len, "output_len": args.output_len,
               "range_ratio": args.range_ratio, "request_rate": rate,
               "burstiness": args.burstiness, "max_concurrency": max_conc,
               "temperature": args.temperature, "ignore_eos": args.ignore_eos, "seed": args.seed,
               "summary": s, "requests": recs}
        write_json(args.json, out)
    return 0 if s["completed"] else 1


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=1, allow_nan=True)
        f.write("\n")


# ---- servers (compare mode) ----


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One server process, started and stopped by the harness; its output goes to a log file
    whose tail is shown when it fails."""

    def __init__(self, name, cmd, port, ready_path, log_path):
        self.name, self.cmd, self.port, self.ready_path = name, cmd, port, ready_path
        self.log_path, self.proc = log_path, None

    @property
    def base_url(self):
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, n=30):
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    def start(self, timeout=180.0):
        log = open(self.log_path, "ab")
        log.write(f"\n---- {' '.join(self.cmd)}\n".encode())
        log.flush()
        self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=log,
                                     stderr=subprocess.STDOUT)
        log.close()
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if self.proc.poll() is not None:
                sys.exit(f"bench_serve: {self.name} exited with status {self.proc.returncode} "
                         f"while starting:\n{' '.join(self.cmd)}\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.base_url + self.ready_path, timeout=2) as r:
                    if r.status == 200:
                        return time.monotonic() - t0
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        self.stop()
        sys.exit(f"bench_serve: {self.name} not ready after {timeout:g} s:\n{self.log_tail()}")

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            self.proc = None
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            print(f"bench_serve: {self.name} ignored SIGTERM for 20 s; killing it",
                  file=sys.stderr)
            self.proc.kill()
            self.proc.wait()
        self.proc = None


class CpuMeter:
    """How much CPU other processes took during a run: the machine's busy time (/proc/stat)
    minus the server's process tree and this process. On a shared machine this, not the load
    average, says whether a run was disturbed. Also the hypervisor's steal time."""

    HZ = os.sysconf("SC_CLK_TCK")

    def __init__(self, root_pid):
        self.root = root_pid
        self.t0, self.busy0, self.steal0 = time.monotonic(), *self.machine()
        self.tree0, self.self0 = self.tree(), self.own()

    @staticmethod
    def machine():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:9]]  # user .. steal
        return (sum(v) - v[3] - v[4] - v[7]) / CpuMeter.HZ, v[7] / CpuMeter.HZ

    @staticmethod
    def own():
        t = os.times()
        return t.user + t.system

    def tree(self):
        """CPU seconds of root_pid and all its descendants."""
        stats = proc_stats()
        return sum(int(stats[p][11]) + int(stats[p][12])
                   for p in descendants(self.root, stats)) / self.HZ

    def stop(self):
        """Returns (server cores, other processes' cores, steal cores), averaged over the run."""
        dt = time.monotonic() - self.t0
        busy, steal = self.machine()
        server = self.tree() - self.tree0
        other = (busy - self.busy0) - server - (self.own() - self.self0)
        return server / dt, max(0.0, other / dt), (steal - self.steal0) / dt


def proc_stats():
    """{pid: fields of /proc/PID/stat after the command name} of every process; fields[i] is
    field i + 3 of proc(5) (fields[1] the parent pid, [11] and [12] user and system ticks)."""
    stats = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        stats[int(d)] = stat[stat.rindex(")") + 2:].split()
    return stats


def descendants(root, stats):
    """root and every process below it in stats (proc_stats()) that is still there."""
    kids = {}
    for pid, fields in stats.items():
        kids.setdefault(int(fields[1]), []).append(pid)
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        if pid in stats:
            out.append(pid)
        todo.extend(kids.get(pid, []))
    return out


def proc_pss(pid):
    """Proportional set size of one process in bytes (/proc/PID/smaps_rollup): each page divided
    by the number of processes mapping it. 0 if it cannot be read."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, IndexError, ValueError):
        pass
    return 0


def tree_mem(root):
    """(RSS, PSS) of root and all its descendants, in bytes. RSS sums each process's resident
    pages (/proc/PID/statm): pages shared between the tree's processes (a model file mapped by
    several, the shared libraries) count once per process, as in `ps`. PSS counts a page shared
    by n processes as 1/n in each, so a multi-process server is not charged twice for them."""
    rss, pss, page = 0, 0, os.sysconf("SC_PAGE_SIZE")
    for pid in descendants(root, proc_stats()):
        try:
            with open(f"/proc/{pid}/statm") as f:
                rss += int(f.read().split()[1]) * page
        except (OSError, IndexError, ValueError):
            continue  # exited meanwhile
        pss += proc_pss(pid)
    return rss, pss


class RssMeter:
    """The tree's resident memory (RSS and PSS): at start and the highest seen by a sampling
    thread (every interval seconds) until stop()."""

    def __init__(self, root_pid, interval=0.1):
        self.root, self.interval = root_pid, interval
        self.idle, self.pss_idle = tree_mem(root_pid)
        self.peak, self.pss_peak = self.idle, self.pss_idle
        self.samples = 1
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _sample(self):
        rss, pss = tree_mem(self.root)
        self.peak, self.pss_peak = max(self.peak, rss), max(self.pss_peak, pss)

    def _run(self):
        while not self._stop.wait(self.interval):
            self._sample()
            self.samples += 1

    def stop(self):
        """Returns (RSS bytes at start, peak RSS bytes); pss_idle and pss_peak hold PSS's."""
        self._stop.set()
        self._thread.join()
        self._sample()
        return self.idle, self.peak


def kv_bytes_per_token(model):
    """Bytes of fp16 K and V per token of context for a GGUF model (every layer, every KV head),
    as lantern's worker and llama-server both store them by default; None if the file's metadata
    does not say (the gguf package reads it)."""
    try:
        import gguf
        r = gguf.GGUFReader(model)

        def field(key):
            f = r.fields.get(key)
            return int(f.parts[f.data[0]][0]) if f is not None else None
        f = r.fields["general.architecture"]
        arch = bytes(f.parts[f.data[0]]).decode()
        layers, heads = field(f"{arch}.block_count"), field(f"{arch}.attention.head_count")
        kv_heads = field(f"{arch}.attention.head_count_kv") or heads
        k_len = field(f"{arch}.attention.key_length")
        v_len = field(f"{arch}.attention.value_length")
        if not k_len:
            k_len = field(f"{arch}.embedding_length") // heads
        return layers * kv_heads * (k_len + (v_len or k_len)) * 2
    except (ImportError, KeyError, OSError, ValueError, TypeError, ZeroDivisionError):
        return None


# ---- compare mode ----

SIDES = ("lantern", "llama.cpp")

# The figures of the table: (label, summary key, sub-key, higher is better). Medians over reps;
# ratio > 1: lantern better (throughput lantern/llama.cpp, latency and memory llama.cpp/lantern).
ROWS = [("output tok/s", "output_throughput", None, True),
        ("TTFT p50 (ms)", "ttft_ms", "p50", False), ("TTFT p99 (ms)", "ttft_ms", "p99", False),
        ("ITL p50 (ms)", "itl_ms", "p50", False), ("ITL p99 (ms)", "itl_ms", "p99", False),
        ("RSS idle (MiB)", "rss_mib", "idle", False), ("RSS peak (MiB)", "rss_mib", "peak", False),
        ("PSS idle (MiB)", "pss_mib", "idle", False), ("PSS peak (MiB)", "pss_mib", "peak", False)]


def figure(run, key, sub):
    v = run["summary"][key]
    return v[sub] if sub else v


def compare_table(runs, concs):
    """runs: {side: {C: [run, ...]}} -> rows {concurrency, metric, lantern, llama.cpp, ratio}
    of medians over the reps."""
    table = []
    for c in concs:
        for label, key, sub, higher in ROWS:
            a = statistics.median(figure(r, key, sub) for r in runs["lantern"][c])
            b = statistics.median(figure(r, key, sub) for r in runs["llama.cpp"][c])
            ratio = (a / b if higher else b / a) if a and b else float("nan")
            table.append({"concurrency": c, "metric": label, "lantern": a, "llama.cpp": b,
                          "ratio": ratio})
    return table


def llama_server_cmd(bindir, model, port, threads, slots, slot_ctx, extra):
    """llama.cpp's server: `slots` sequences decoded together (continuous batching), each with
    slot_ctx positions of context."""
    return [os.path.join(bindir, "llama-server"), "-m", model, "--host", "127.0.0.1",
            "--port", str(port), "-t", str(threads), "-tb", str(threads), "-np", str(slots),
            "-cb", "-c", str(slots * slot_ctx)] + extra


def peer_workloads(args, bindir, model, concs, log):
    """The requests of each concurrency (the same for both sides) and the warm-up request, sized
    with llama-server's own tokenizer (one server started for that alone): word token counts,
    then each prompt's exact length with the BOS the model adds."""
    port = free_port()
    srv = Server("llama-server (tokenizer)",
                 llama_server_cmd(bindir, model, port, 1, 1, 512, []), port, "/health", log)
    srv.start()

    async def go(target):
        count, how = await find_tokenizer(target)
        if count is None:
            raise RuntimeError("llama-server answered no tokenize dialect")
        counts = await WordCounts.build_async(count)
        workloads = {}
        for c in concs:
            n = args.num_prompts or max(8, 2 * c)
            workloads[c] = make_requests(n, args.input_len, args.output_len, args.range_ratio,
                                         counts, args.seed * 1000 + c)
            for r in workloads[c]:
                r["prompt_len"] = await count(r["prompt"], True)
        warm = warmup_requests(1, args, counts)
        for r in warm:
            r["prompt_len"] = await count(r["prompt"], True)
        return workloads, warm, how
    try:
        return asyncio.run(go(Target(srv.base_url, "/v1/completions", None, None, None, 60)))
    except (RuntimeError, OSError, ConnectionError, asyncio.TimeoutError) as e:
        sys.exit(f"bench_serve: sizing the prompts with llama-server's tokenizer failed: {e}")
    finally:
        srv.stop()


def measure_side(srv, side, extra, reqs, warm, c, args, percentiles):
    """Starts srv, sends the warm-up request and the workload at concurrency c, stops it; returns
    the run's record (summary with RSS, startup time, CPU use, requests)."""
    startup = srv.start()
    try:
        rss = RssMeter(srv.proc.pid)
        target = Target(srv.base_url, "/v1/completions", None, None, extra, args.timeout)
        target.model = asyncio.run(first_model(target))
        # One short request first (thread pools, first touch of the weights), with a prompt of
        # its own.
        asyncio.run(run_benchmark(target, warm, float("inf"), 1.0, 1, 0.0, True, args.seed,
                                  progress=False))
        # Idle: loaded and warmed up (weights mapped lazily are resident by now), no request.
        idle, pss_idle = tree_mem(srv.proc.pid)
        meter = CpuMeter(srv.proc.pid)
        recs, dur = asyncio.run(run_benchmark(target, reqs, float("inf"), 1.0, c, 0.0, True,
                                              args.seed, desc=f"{side} C={c}",
                                              progress=not args.disable_tqdm))
        cpu = meter.stop()
        _, peak = rss.stop()
    finally:
        srv.stop()
    s = summarize(recs, dur, percentiles)
    s["rss_mib"] = {"idle": idle / 2**20, "peak": peak / 2**20}
    s["pss_mib"] = {"idle": pss_idle / 2**20, "peak": rss.pss_peak / 2**20}
    return {"summary": s, "startup_s": startup, "requests": recs,
            "cpu_cores": {"server": cpu[0], "other": cpu[1], "steal": cpu[2]}}


def compare_main(args, percentiles):
    binary, bin_sha, bin_mtime, model = prepare_lantern("bench_serve", args.lantern, args.model)
    bindir = llama_bin_dir("bench_serve", args.llama_bin)
    concs, T = args.concurrency_list, args.threads
    tmp = tempfile.mkdtemp(prefix="bench_serve.")
    lantern_log, llama_log = os.path.join(tmp, "lantern.log"), os.path.join(tmp, "llama.log")

    workloads, warm, how = peer_workloads(args, bindir, model, concs, llama_log)
    longest = max(r["prompt_len"] + r["max_tokens"] for reqs in workloads.values() for r in reqs)
    slot_ctx = 256 * math.ceil((longest + 16) / 256)  # each slot holds its longest request

    # The same KV capacity on both sides: llama-server allocates C x slot_ctx positions, slot_ctx
    # per request; lantern's pool (--kv-cache-memory) is sized to hold as many tokens (its blocks
    # are 16 tokens) and its requests capped alike (--max-model-len: it refuses to start with a
    # context one request could not fit in the pool).
    kv_tok = kv_bytes_per_token(model) if args.kv_match else None
    if args.kv_match and not kv_tok:
        sys.exit("bench_serve: --kv-match needs the model's KV size per token (the gguf package "
                 "reads it: tools/setup.sh --bench); --no-kv-match keeps lantern's default pool")
    kv_arg = lambda c: (["--kv-cache-memory", str(c * slot_ctx * kv_tok),  # noqa: E731
                         "--max-model-len", str(slot_ctx)] if kv_tok else [])
    lantern_cmd = lambda port, c: ([binary, "serve", model, "--host", "127.0.0.1",  # noqa: E731
                                    "--port", str(port), "--threads", str(T),
                                    "--disable-log-requests"] + kv_arg(c) + args.lantern_arg)
    llama_cmd = lambda port, c: llama_server_cmd(bindir, model, port, T, c,  # noqa: E731
                                                 slot_ctx, args.llama_arg)
    # The same request to both, greedy (temperature 0), EOS ignored (both take ignore_eos);
    # llama-server's repeat penalty set to 1 (off) explicitly, as lantern's default.
    extra = {"lantern": {}, "llama.cpp": {"repeat_penalty": 1.0}}

    machine = {"cpu": cpu_model(), "cores": n_cores(), "threads": T, "isa": cpu_isa(),
               "kernel": platform.release(), "loadavg_start": os.getloadavg()}
    info = {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "commit": git_commit(), "peer": peer_version(bindir), "llama_bin": bindir,
            "lantern_binary": {"path": args.lantern, "sha256_12": bin_sha,
                               "built": bin_mtime.isoformat(timespec="seconds")},
            "model": model, "input_len": args.input_len, "output_len": args.output_len,
            "range_ratio": args.range_ratio, "prompt_lengths_from": how,
            "num_prompts": {c: len(w) for c, w in workloads.items()}, "reps": args.reps,
            "llama_slot_ctx": slot_ctx, "machine": machine,
            "kv_tokens": {c: c * slot_ctx for c in concs} if kv_tok else None,
            "lantern_cmd": {c: lantern_cmd(0, c) for c in concs},
            "llama_cmd": {c: llama_cmd(0, c) for c in concs}}
    print(f"bench_serve --compare: {os.path.basename(model)}, {T} threads, concurrency "
          f"{','.join(map(str, concs))}, input {args.input_len} / output {args.output_len} "
          f"tokens (range ratio {args.range_ratio:g}), {args.reps} rep(s); logs in {tmp}",
          file=sys.stderr, flush=True)

    runs = {s: {c: [] for c in concs} for s in SIDES}
    current = []

    def cleanup(*_):
        for srv in current:
            srv.stop()
        sys.exit("bench_serve: interrupted")
    signal.signal(signal.SIGTERM, cleanup)

    turn = 0
    try:
        for rep in range(args.reps):
            for c in concs:
                # Alternate which side goes first, so drift in the machine's load hits both.
                order = SIDES if turn % 2 == 0 else SIDES[::-1]
                turn += 1
                for side in order:  # one server at a time
                    port = free_port()
                    srv = (Server("lantern", lantern_cmd(port, c), port, "/health", lantern_log)
                           if side == "lantern" else
                           Server("llama-server", llama_cmd(port, c), port, "/health",
                                  llama_log))
                    current[:] = [srv]
                    run = measure_side(srv, side, extra[side], workloads[c], warm, c, args,
                                       percentiles)
                    current.clear()
                    runs[side][c].append(run)
                    print_run(rep, c, side, run)
    except KeyboardInterrupt:
        cleanup()
    machine["loadavg_end"] = os.getloadavg()
    table = compare_table(runs, concs)
    print_compare(args, info, table, runs, concs, slot_ctx)
    if args.json:
        write_json(args.json, dict(info, table=table, runs=runs))
    return 0


def print_run(rep, c, side, run):
    s, cpu = run["summary"], run["cpu_cores"]
    print(f"  rep {rep + 1} C={c:<3} {side:>9}: {s['completed']}/{len(run['requests'])} ok in "
          f"{s['duration_s']:6.1f} s, {s['output_throughput']:7.1f} out tok/s, TTFT p50 "
          f"{s['ttft_ms']['p50']:8.1f} ms, ITL p50 {s['itl_ms']['p50']:6.1f} ms, "
          f"{s['mean_output_tokens']:.1f} out tokens/request, RSS idle "
          f"{s['rss_mib']['idle']:.0f} peak {s['rss_mib']['peak']:.0f} MiB; cores used: server "
          f"{cpu['server']:.2f}, other processes {cpu['other']:.2f}, steal {cpu['steal']:.2f}",
          file=sys.stderr, flush=True)
    for err, n in s["errors"].items():
        print(f"      {n} x {err}", file=sys.stderr)


def print_compare(args, info, table, runs, concs, slot_ctx):
    machine = info["machine"]
    med = "" if args.reps == 1 else f", median of {args.reps}"
    print()
    print(f"| C | metric ({args.input_len}+{args.output_len} tokens/request{med}) | lantern "
          "| llama.cpp | ratio (>1: lantern better) |")
    print("|---:|---|---:|---:|---:|")
    for row in table:
        print(f"| {row['concurrency']} | {row['metric']} | {row['lantern']:.1f} "
              f"| {row['llama.cpp']:.1f} | {row['ratio']:.2f} |")
    print()
    print(f"machine: {machine['cpu']} ({' '.join(machine['isa']) or 'no AVX2'}), "
          f"{machine['cores']} cores, {machine['threads']} threads per server; Linux "
          f"{machine['kernel']}; load average %.1f/%.1f/%.1f at start, %.1f/%.1f/%.1f at end"
          % (machine["loadavg_start"] + machine["loadavg_end"]))
    print(f"commit: {info['commit']}; lantern binary built {info['lantern_binary']['built']} "
          f"(sha256 {info['lantern_binary']['sha256_12']}...); peer: llama-server from "
          f"{info['peer']} (-np C -cb -c C x {slot_ctx}); model {os.path.basename(info['model'])}")
    print("requests per concurrency: " + ", ".join(f"C={c}: {n}"
                                                    for c, n in info["num_prompts"].items())
          + "; RSS: resident memory summed over each server's process tree (/proc), idle = "
          "after the warm-up request, peak = sampled every 0.1 s from start to the run's end; "
          "PSS: the same with pages shared between processes divided among them")
    print("KV capacity: " + ("the same on both sides, C x %d tokens (lantern --kv-cache-memory)"
                             % slot_ctx if info.get("kv_tokens") else
                             "lantern's default pool, llama-server C x %d tokens" % slot_ctx))
    other = max(r["cpu_cores"]["other"] + r["cpu_cores"]["steal"]
                for side in SIDES for c in concs for r in runs[side][c])
    print(f"other processes and steal: at most {other:.2f} cores during any run" +
          (" — the machine was shared; not worth keeping (see bench/README.md)"
           if other > 0.1 else ""))
    for c in concs:
        for side in SIDES:
            for r in runs[side][c]:
                s = r["summary"]
                if s["failed"] or s["short_outputs"]:
                    print(f"note: C={c} {side}: {s['failed']} failed, {s['short_outputs']} "
                          f"ended before max_tokens ({s['mean_output_tokens']:.1f} output "
                          "tokens/request)")


# ---- main ----


def parse_percentiles(s):
    try:
        ps = [float(x) for x in s.split(",") if x.strip()]
    except ValueError:
        ps = []
    if not ps or any(not 0 <= p <= 100 for p in ps):
        raise argparse.ArgumentTypeError("a comma-separated list of numbers in 0..100")
    return sorted(set(ps) | {50.0, 99.0})


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="See bench/README.md.")
    g = ap.add_argument_group("workload")
    g.add_argument("--num-prompts", type=int,
                   help="requests per run (default 100; --compare: max(8, 2 x concurrency))")
    g.add_argument("--input-len", type=int, default=128, help="prompt tokens (default 128)")
    g.add_argument("--output-len", type=int, default=128,
                   help="max_tokens per request (default 128)")
    g.add_argument("--range-ratio", type=float, default=0.0,
                   help="lengths uniform in len*(1-r)..len*(1+r) (default 0: fixed)")
    g.add_argument("--concurrency", metavar="N[,N...]",
                   help="requests in flight, all sent at once (closed loop); --compare: a "
                        "list (default 1,8,32)")
    g.add_argument("--request-rate", type=float, default=float("inf"),
                   help="requests per second, Poisson arrivals (default inf: all at once)")
    g.add_argument("--burstiness", type=float, default=1.0,
                   help="gamma shape of the arrival gaps (1: Poisson; <1 burstier)")
    g.add_argument("--max-concurrency", type=int, help="cap on requests in flight with a rate")
    g.add_argument("--temperature", type=float, default=0.0, help="default 0 (greedy)")
    g.add_argument("--ignore-eos", action=argparse.BooleanOptionalAction, default=True,
                   help="send ignore_eos: true (default on)")
    g.add_argument("--extra-body", type=json.loads, metavar="JSON",
                   help="fields merged into every request body")
    g.add_argument("--seed", type=int, default=0, help="prompts, lengths, arrivals (default 0)")
    g = ap.add_argument_group("client")
    g.add_argument("--base-url", default="http://127.0.0.1:8000",
                   help="server (default %(default)s)")
    g.add_argument("--endpoint", default="/v1/completions",
                   help="/v1/completions (default) or /v1/chat/completions")
    g.add_argument("--model", help="model name to send (default: the first of GET /v1/models); "
                                   "--compare: the GGUF file both servers load (default: the "
                                   "default model)")
    g.add_argument("--api-key", default=os.environ.get("OPENAI_API_KEY"),
                   help="bearer token (default $OPENAI_API_KEY)")
    g.add_argument("--timeout", type=float, default=600.0, help="per request, s (default 600)")
    g.add_argument("--warmup", type=int, default=1,
                   help="short requests sent before the measured ones (default 1)")
    g.add_argument("--percentiles", type=parse_percentiles, default=[50.0, 99.0],
                   help="comma-separated; 50 and 99 always (default 50,99)")
    g.add_argument("--disable-tqdm", action="store_true", help="no progress bar")
    g.add_argument("--json", metavar="OUT", help="write the summary and every request to OUT")
    g = ap.add_argument_group("compare mode")
    g.add_argument("--compare", action="store_true",
                   help="start lantern serve and llama.cpp's llama-server in turn and compare "
                        "them")
    g.add_argument("--threads", type=int, default=n_cores(),
                   help="threads for each server (default: all cores, %(default)s here)")
    g.add_argument("--reps", type=int, default=3,
                   help="runs per concurrency and side, interleaved; the table shows medians "
                        "(default 3)")
    g.add_argument("--lantern", default=os.path.join(ROOT, "build", "lantern"),
                   help="lantern binary (default build/lantern)")
    g.add_argument("--lantern-arg", action="append", default=[], metavar="ARG",
                   help="extra argument for lantern serve (repeatable)")
    g.add_argument("--llama-bin", help="directory of llama.cpp's programs (default: what "
                                       "bench/build_llama_cpp.sh prints)")
    g.add_argument("--llama-arg", action="append", default=[], metavar="ARG",
                   help="extra argument for llama-server (repeatable)")
    g.add_argument("--kv-match", action=argparse.BooleanOptionalAction, default=True,
                   help="size lantern's KV pool to llama-server's context (C x slot positions) "
                        "at each concurrency, so memory compares at the same KV capacity "
                        "(default on)")
    args = ap.parse_args()

    if args.input_len < 1 or args.output_len < 1 or not 0 <= args.range_ratio < 1:
        ap.error("--input-len and --output-len must be >= 1, --range-ratio in [0, 1)")
    if args.burstiness <= 0 or args.request_rate <= 0:
        ap.error("--request-rate and --burstiness must be > 0")
    if args.num_prompts is not None and args.num_prompts < 1:
        ap.error("--num-prompts must be >= 1")
    try:
        concs = [int(x) for x in (args.concurrency or "").split(",") if x.strip()]
    except ValueError:
        ap.error("--concurrency: a number or a comma-separated list of numbers")
    if any(c < 1 for c in concs):
        ap.error("--concurrency must be >= 1")

    if args.compare:
        if args.threads < 1 or args.reps < 1:
            ap.error("--threads and --reps must be >= 1")
        if math.isfinite(args.request_rate) or args.max_concurrency:
            ap.error("--compare runs at fixed concurrency; --request-rate/--max-concurrency "
                     "are for client mode")
        args.concurrency_list = concs or [1, 8, 32]
        return compare_main(args, args.percentiles)

    if len(concs) > 1:
        ap.error("--concurrency takes one number outside --compare")
    if concs and (math.isfinite(args.request_rate) or args.max_concurrency):
        ap.error("--concurrency N is a closed loop; use --request-rate with --max-concurrency")
    args.concurrency = concs[0] if concs else None
    if args.num_prompts is None:
        args.num_prompts = 100
    try:
        return asyncio.run(client_main(args, args.percentiles))
    except (RuntimeError, OSError) as e:
        sys.exit(f"bench_serve: {e}")


if __name__ == "__main__":
    sys.exit(main())
