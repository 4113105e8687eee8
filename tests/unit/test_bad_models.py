#!/usr/bin/env python3
"""`lantern generate` on broken model files: one clear line naming the file and the problem,
a non-zero exit status, never a crash (no signal, no sanitizer report).

Starts from the good random-weight models that ctest's `random_models` fixture made in
$LANTERN_MODELS_DIR, breaks a copy of each in one way, and runs $LANTERN_BIN on it.
"""
import glob
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile

import gguf

BIN = os.environ["LANTERN_BIN"]
MODELS = os.environ["LANTERN_MODELS_DIR"]
failures = []
passed = 0


def gguf_path(name):
    p = os.path.join(MODELS, name)
    return p if os.path.isfile(p) else sorted(glob.glob(os.path.join(p, "*.gguf")))[0]


def run(model):
    return subprocess.run([BIN, "generate", "--model", model, "--prompt-ids", "1,2,3",
                           "--max-tokens", "2"], capture_output=True, text=True, timeout=120)


def expect_error(label, model, *needles):
    global passed
    r = run(model)
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    problems = []
    if r.returncode <= 0 or r.returncode >= 128:
        problems.append(f"exit status {r.returncode} (want a plain non-zero status)")
    if len(lines) != 1:
        problems.append(f"{len(lines)} lines on stderr (want 1)")
    text = r.stderr
    if model not in text and os.path.dirname(model) not in text:
        problems.append("message does not name the file")
    for n in needles:
        if n not in text:
            problems.append(f"message lacks '{n}'")
    if problems:
        failures.append(f"{label}: {'; '.join(problems)}\n    stderr: {r.stderr.strip()!r}")
        print(f"FAIL {label}")
    else:
        passed += 1
        print(f"ok   {label}: {lines[0]}")


def tensor_info(path, name):
    """(offset of the tensor's info record's type field, data offset, size) in a GGUF file."""
    r = gguf.GGUFReader(path)
    for t in r.tensors:
        if t.name == name:
            base = r.data.ctypes.data
            # parts of a tensor info: name len, name, n_dims, dims, type, offset
            type_part = t.field.parts[-2]
            return type_part.ctypes.data - base, int(t.data_offset), int(t.n_bytes)
    raise KeyError(name)


def main():
    tmp = tempfile.mkdtemp(prefix="lantern-bad-")
    try:
        good = gguf_path("llama-tiny-gguf")
        blob = open(good, "rb").read()

        def variant(label, data):
            p = os.path.join(tmp, label + ".gguf")
            with open(p, "wb") as f:
                f.write(data)
            return p

        # The good file works: the failures below are the damage, not the model.
        r = run(good)
        if r.returncode != 0:
            failures.append(f"good model fails: {r.stderr.strip()}")

        expect_error("missing file", os.path.join(tmp, "absent.gguf"), "cannot open")
        expect_error("wrong magic", variant("magic", b"XXXX" + blob[4:]), "magic")
        expect_error("truncated header", variant("trunc_header", blob[:40]), "past end of file")
        expect_error("empty file", variant("empty", b""), "")
        type_off, data_off, size = tensor_info(good, "blk.1.ffn_down.weight")
        expect_error("tensor past end of file",
                     variant("past_end", blob[:data_off + size // 2]), "past end")
        bad = bytearray(blob)
        struct.pack_into("<I", bad, type_off, 99)
        expect_error("unknown tensor type", variant("bad_type", bytes(bad)), "type")

        # shape mismatch and missing tensor: rewrite the metadata with gguf's writer
        rd = gguf.GGUFReader(good)
        arch = "llama"

        def rewrite(label, change_key=None, new_value=None, drop=None):
            p = os.path.join(tmp, label + ".gguf")
            w = gguf.GGUFWriter(p, arch)
            for k, f in rd.fields.items():
                if k.startswith("GGUF.") or k == "general.architecture":
                    continue
                v = f.contents()
                if k == change_key:
                    v = new_value
                vt = f.types[0]
                if vt == gguf.GGUFValueType.ARRAY:
                    w.add_key_value(k, v, vt, sub_type=f.types[-1])
                else:
                    w.add_key_value(k, v, vt)
            for t in rd.tensors:
                if t.name == drop:
                    continue
                w.add_tensor(t.name, t.data, raw_shape=list(reversed([int(d) for d in t.shape])),
                             raw_dtype=t.tensor_type)
            w.write_header_to_file()
            w.write_kv_data_to_file()
            w.write_tensors_to_file()
            w.close()
            return p

        expect_error("shape mismatch with config",
                     rewrite("shape", "llama.feed_forward_length", 320), "shape", "expected")
        expect_error("missing tensor", rewrite("missing", drop="blk.1.attn_k.weight"),
                     "missing tensor", "blk.1.attn_k.weight")

        # Hugging Face directories
        hf = os.path.join(MODELS, "llama-tiny")

        def hf_variant(label, edit_config=None, remove=None, corrupt=None):
            d = os.path.join(tmp, label)
            shutil.copytree(hf, d)
            if edit_config:
                cp = os.path.join(d, "config.json")
                cfg = json.load(open(cp))
                edit_config(cfg)
                json.dump(cfg, open(cp, "w"))
            if remove:
                os.remove(os.path.join(d, remove))
            if corrupt:
                corrupt(d)
            return d

        expect_error("hf: shape mismatch with config",
                     hf_variant("hf_shape", lambda c: c.update(intermediate_size=320)),
                     "shape", "expected")
        expect_error("hf: missing tensor",
                     hf_variant("hf_missing", lambda c: c.update(num_hidden_layers=3)),
                     "missing tensor", "model.layers.2")
        expect_error("hf: unknown architecture",
                     hf_variant("hf_arch", lambda c: c.update(architectures=["GPT2LMHeadModel"],
                                                               model_type="gpt2")),
                     "GPT2LMHeadModel")
        expect_error("hf: no config.json", hf_variant("hf_noconfig", remove="config.json"),
                     "config.json")

        def truncate_weights(d):
            f = sorted(glob.glob(os.path.join(d, "*.safetensors")))[0]
            data = open(f, "rb").read()
            open(f, "wb").write(data[:len(data) // 2])

        expect_error("hf: truncated safetensors", hf_variant("hf_trunc", corrupt=truncate_weights),
                     ".safetensors")

        def bad_header(d):
            f = sorted(glob.glob(os.path.join(d, "*.safetensors")))[0]
            data = bytearray(open(f, "rb").read())
            data[8:9] = b"#"  # the JSON header no longer parses
            open(f, "wb").write(bytes(data))

        expect_error("hf: corrupt safetensors header", hf_variant("hf_json", corrupt=bad_header),
                     ".safetensors")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    for f in failures:
        print("FAIL " + f)
    print(f"{passed} passed, {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
