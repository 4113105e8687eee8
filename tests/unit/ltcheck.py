"""Shared by the Python integration tests (tests/unit/test_*.py): named checks that print as they
go and add up to an exit status, and the default model's path.

    import ltcheck
    from ltcheck import check
    check("label", ok, "detail shown when it fails")
    ...
    return ltcheck.summary()          # 1 if any check failed, else 0
"""
import json
import os
import re
import signal
import subprocess
import sys
import threading

failures = []
passed = 0


def check(label, ok, detail=""):
    global passed
    if ok:
        passed += 1
        print(f"ok   {label}", flush=True)
    else:
        failures.append(f"{label}: {detail}")
        print(f"FAIL {label}: {detail}", flush=True)
    return bool(ok)


def summary(skipped=False):
    """Prints the failures and the counts; the exit status: 77 (skipped) when asked and nothing
    failed, 1 when something failed, else 0."""
    for f in failures:
        print("FAIL " + f)
    print(f"{passed} passed, {len(failures)} failed")
    if failures:
        return 1
    return 77 if skipped else 0


def process_tree(pid):
    """pid and all its descendants, sorted (from /proc/*/stat's parent pid)."""
    parent = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    st = f.read()
                parent[int(d)] = int(st[st.rfind(")") + 2:].split()[1])
            except (OSError, ValueError, IndexError):
                pass
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += [c for c, pp in parent.items() if pp == p]
    return sorted(out)


def default_model(honor_env=True):
    """The default model's path, or None when it is absent. With honor_env, $LANTERN_MODEL
    overrides it (the sanitizer run sets it to /nonexistent to leave slow default-model checks
    out); tests whose default-model checks must also run under the sanitizers (process
    supervision, dumps) pass honor_env=False."""
    env = os.environ.get("LANTERN_MODEL") if honor_env else None
    if env:
        return env if os.path.exists(env) else None
    r = subprocess.run([os.path.join(os.environ["LANTERN_SOURCE_DIR"], "tools", "fetch_model.sh")],
                       capture_output=True, text=True)
    path = r.stdout.strip()
    return path if r.returncode == 0 and os.path.exists(path) else None


def start_tree(args, stdout=subprocess.PIPE):
    """Starts a `lantern` command (args, the binary first) that runs the process tree; returns
    (process, its stderr lines as they come, an event set once the engine logged that every
    worker has loaded its shard, the reader thread)."""
    p = subprocess.Popen(args, stdout=stdout, stderr=subprocess.PIPE, text=True)
    lines, ready = [], threading.Event()

    def pump():
        for line in p.stderr:
            lines.append(line)
            if " engine " in line and "ready:" in line:
                ready.set()
    t = threading.Thread(target=pump, daemon=True)
    t.start()
    return p, lines, ready, t


def tiny_model(tmp):
    """llama-tiny-gguf (random weights, byte-level BPE tokenizer, no chat template) from
    LANTERN_MODELS_DIR, else made in tmp from tools/random_models.json."""
    models = os.environ.get("LANTERN_MODELS_DIR", "")
    path = os.path.join(models, "llama-tiny-gguf", "model.gguf")
    if models and os.path.exists(path):
        return path
    src = os.environ["LANTERN_SOURCE_DIR"]
    with open(os.path.join(src, "tools", "random_models.json")) as f:
        args = json.load(f)["llama-tiny-gguf"]
    out = os.path.join(tmp, "llama-tiny-gguf")
    subprocess.run([sys.executable, os.path.join(src, "tools", "make_random_model.py"),
                    "--out", out, *args], check=True, capture_output=True)
    return os.path.join(out, "model.gguf")


class Server:
    """`lantern serve MODEL --port 0 ...` ($LANTERN_BIN); .base is http://127.0.0.1:PORT and .port
    the port once it listens (both None if it never does); .log() is its recent stderr."""

    def __init__(self, model, *extra, wait=180):
        self.p = subprocess.Popen([os.environ["LANTERN_BIN"], "serve", model, "--port", "0",
                                   *extra],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.lines, self.base, self.port = [], None, None
        ready = threading.Event()

        def pump():
            for line in self.p.stderr:
                self.lines.append(line)
                m = re.search(r"listening on (http://([^/\s]+):(\d+))", line)
                if m and not self.base:
                    self.base, self.port = m.group(1), int(m.group(3))
                    ready.set()
            ready.set()
        self.t = threading.Thread(target=pump, daemon=True)
        self.t.start()
        ready.wait(wait)

    def log(self, n=1500):
        return "".join(self.lines)[-n:]

    def stop(self):
        """SIGTERM, then SIGKILL after 60 s; returns the exit status."""
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(60)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.t.join(5)
        return self.p.returncode
