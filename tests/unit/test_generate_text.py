#!/usr/bin/env python3
"""Text in, text out through the process tree: `lantern generate --prompt/--chat`.

The default model's greedy text for "The capital of France is" equals transformers' greedy
generation from the same GGUF (fixture reference_default.json); a chat is rendered with the
model's own template and ends at its end-of-turn token; stop strings cut the text before them;
the same seed gives the same text; bad arguments are refused with status 2.
"""
import json
import os
import subprocess
import sys

import ltcheck
from ltcheck import check, default_model

BIN = os.environ["LANTERN_BIN"]
FIX = os.environ["LANTERN_FIXTURES"]




def gen(*args):
    r = subprocess.run([BIN, "generate", *args], capture_output=True, text=True, timeout=300)
    out = r.stdout[:-1] if r.stdout.endswith("\n") else r.stdout
    return r.returncode, out, r.stderr


def main():
    for label, args in [("both prompt and chat", ["--prompt", "a", "--chat", "b"]),
                        ("system without chat", ["--prompt", "a", "--system", "s"]),
                        ("bad temperature", ["--prompt", "a", "--temperature", "hot"]),
                        ("bad top-p", ["--prompt", "a", "--top-p", "2"]),
                        ("bad stop ids", ["--prompt", "a", "--stop-token-ids", "x"])]:
        rc, _, err = gen(*args)
        check(f"usage error: {label}", rc == 2 and err.strip(), f"status {rc}, {err!r}")

    model = default_model(honor_env=False)
    if not model:
        print("default model absent: skipping")
        return ltcheck.summary(skipped=True)
    ref = json.load(open(os.path.join(FIX, "reference_default.json")))
    for i in (0, 2):
        case = ref["cases"][i]
        rc, out, err = gen("--model", model, "--prompt", ref["texts"][i], "--max-tokens", "16",
                           "--temperature", "0")
        check(f"greedy text equals transformers' (prompt {i})",
              rc == 0 and out == case["generate_16_text"],
              f"got {out!r}, want {case['generate_16_text']!r}, {err[-300:]}")

    rc, out, err = gen("--model", model, "--chat", "What is the capital of France?",
                       "--max-tokens", "64", "--temperature", "0")
    check("chat answers and ends at the end of its turn",
          rc == 0 and "Paris" in out and "(stop)" in err and "<|im_end|>" not in out,
          f"{out!r} {err[-300:]}")
    rc2, out2, err2 = gen("--model", model, "--chat", "What is the capital of France?",
                          "--system", "Answer in one word.", "--max-tokens", "64",
                          "--temperature", "0")
    n1 = [l for l in err.splitlines() if l.startswith("prompt:")]
    n2 = [l for l in err2.splitlines() if l.startswith("prompt:")]
    check("the system message is rendered into the prompt",
          rc2 == 0 and n1 and n2 and n1[0].split(",")[0] != n2[0].split(",")[0], f"{n1} {n2}")

    full = ref["cases"][0]["generate_16_text"]
    rc, out, err = gen("--model", model, "--prompt", ref["texts"][0], "--max-tokens", "16",
                       "--temperature", "0", "--stop", "answer")
    check("stop string cuts the text before it",
          rc == 0 and out == full[:full.index("answer")], f"{out!r}")

    outs = [gen("--model", model, "--prompt", "Once upon a time", "--max-tokens", "24",
                "--temperature", "0.9", "--seed", str(s))[1] for s in (7, 7, 8)]
    check("same seed, same text", outs[0] == outs[1] and outs[0], str(outs))
    check("another seed, another text", outs[0] != outs[2], str(outs))

    return ltcheck.summary()


if __name__ == "__main__":
    sys.exit(main())
