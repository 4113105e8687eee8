#!/usr/bin/env python3
"""Writes a small random-weight model, as a Hugging Face directory or a GGUF file.

Tests use these to cover shapes the default model lacks (grouped-query attention, Qwen2 biases,
Qwen3 q/k norms and head_dim != hidden/heads, tied embeddings, f16/bf16, sharded safetensors,
rope scaling) without downloading anything. Needs only numpy and gguf (the GGUF writer), so it
runs in CI; safetensors files are written by hand.

Output is byte-for-byte deterministic given the arguments: weights come from
numpy.random.RandomState(seed) (a stream numpy keeps frozen across versions) in a fixed order that
does not depend on --format, so the HF and GGUF outputs of the same arguments are the same model.
For arch llama the GGUF q/k rows are permuted the way llama.cpp's converter does it (GGUF llama
rotates adjacent pairs, HF rotates halves); Qwen2/Qwen3 GGUF files keep HF's layout.

Weights are scaled so activations stay moderate and logits are well spread (std ~6: greedy
decoding has clear winners, so comparisons against a reference are not decided by float noise).

    make_random_model.py --arch llama|qwen2|qwen3 --format hf|gguf --out PATH --seed N
        --layers L --dim D --heads H [--kv-heads K] [--head-dim HD] --hidden F --vocab V
        [--tie] [--dtype f32|f16|bf16|kquant|q5] [--dequantized-twin PATH] [--shards N]
        [--max-pos P] [--rope-theta T]
        [--rope-scaling linear:F | llama3:F[:LOW:HIGH:ORIG]] [--eps E] [--chat-template JINJA]

--out is a directory for hf (created; existing files of the same names are replaced). For gguf it
is the file itself when it ends in .gguf, else a directory that receives model.gguf.

--dtype kquant (gguf only) stores every matrix as K-quant super-blocks of random bytes with scales
sized to the matrix's intended spread (the gguf package cannot quantize to K-quants): Q6_K for
the embeddings, lm_head, v_proj and down_proj, Q5_K for q_proj and k_proj, Q4_K for the rest, as
llama.cpp's Q4_K_M mixes them. Their input dimensions must be multiples of 256.
--dtype q5 (gguf only) likewise in 32-element blocks: Q5_0 for the attention matrices, Q5_1 for
the others.
--dequantized-twin PATH also writes the same model with those matrices as the F32 values they
dequantize to (the gguf package's decoder): a reference for the K-quant kernels end to end. A bare
file name goes beside the model.
"""
import argparse
import json
import math
import os
import struct
import sys

import numpy as np

BOS_ID = 1
EOS_ID = 2
LOGIT_STD = 6.0

# ---- weights ----


def round_to_dtype(a, dtype):
    """The float32 values a tensor takes once stored as dtype (identical for both formats)."""
    a = np.ascontiguousarray(a, dtype=np.float32)
    if dtype in ("f32", "kquant", "q5"):  # the matrices are replaced by kquant_tensors
        return a
    if dtype == "f16":
        return a.astype(np.float16).astype(np.float32)
    return bf16_bits_to_f32(f32_to_bf16_bits(a))


def f32_to_bf16_bits(a):
    """Round-to-nearest-even float32 -> bfloat16 bit patterns (weights are finite)."""
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return u.astype(np.uint16)


def bf16_bits_to_f32(b):
    return (b.astype(np.uint32) << 16).view(np.float32)


def make_weights(a):
    """Returns [(hf_name, float32 array in PyTorch layout)] in a fixed generation order."""
    rng = np.random.RandomState(a.seed)
    hd, nh, nkv = a.head_dim, a.heads, a.kv_heads
    out = []

    def normal(shape, std):
        return (rng.standard_normal(shape) * std).astype(np.float32)

    def linear(rows, cols):
        return normal((rows, cols), 1.0 / math.sqrt(cols))

    def norm(n):
        return (1.0 + normal((n,), 0.1)).astype(np.float32)

    # The final norm leaves unit-RMS rows, so an output matrix of std LOGIT_STD/sqrt(dim) gives
    # logits of std ~LOGIT_STD: top-1/top-2 gaps far above float error. Tied embeddings must be
    # that small too; untied ones are unit-size. With tied embeddings the input token's own
    # embedding in the residual stream adds |e|^2 / rms(residual) to its own logit, about
    # LOGIT_STD/rms(residual) standard deviations: with unit-size layer outputs greedy decoding
    # just repeats its input, so there the attention and MLP outputs are made LOGIT_STD times
    # larger (pre-norm layers do not mind the residual's scale).
    embd_std = LOGIT_STD / math.sqrt(a.dim) if a.tie else 1.0
    res_gain = np.float32(LOGIT_STD if a.tie else 1.0)
    out.append(("model.embed_tokens.weight", normal((a.vocab, a.dim), embd_std)))
    for i in range(a.layers):
        p = f"model.layers.{i}."
        out.append((p + "self_attn.q_proj.weight", linear(nh * hd, a.dim)))
        out.append((p + "self_attn.k_proj.weight", linear(nkv * hd, a.dim)))
        out.append((p + "self_attn.v_proj.weight", linear(nkv * hd, a.dim)))
        if a.arch == "qwen2":
            out.append((p + "self_attn.q_proj.bias", normal((nh * hd,), 0.1)))
            out.append((p + "self_attn.k_proj.bias", normal((nkv * hd,), 0.1)))
            out.append((p + "self_attn.v_proj.bias", normal((nkv * hd,), 0.1)))
        if a.arch == "qwen3":
            out.append((p + "self_attn.q_norm.weight", norm(hd)))
            out.append((p + "self_attn.k_norm.weight", norm(hd)))
        out.append((p + "self_attn.o_proj.weight", linear(a.dim, nh * hd) * res_gain))
        out.append((p + "mlp.gate_proj.weight", linear(a.hidden, a.dim)))
        out.append((p + "mlp.up_proj.weight", linear(a.hidden, a.dim)))
        out.append((p + "mlp.down_proj.weight", linear(a.dim, a.hidden) * res_gain))
        out.append((p + "input_layernorm.weight", norm(a.dim)))
        out.append((p + "post_attention_layernorm.weight", norm(a.dim)))
    out.append(("model.norm.weight", norm(a.dim)))
    if not a.tie:
        out.append(("lm_head.weight", normal((a.vocab, a.dim), LOGIT_STD / math.sqrt(a.dim))))
    return [(n, round_to_dtype(w, a.dtype)) for n, w in out]


# ---- rope scaling ----


def parse_rope_scaling(s, max_pos):
    """'linear:F' or 'llama3:F[:LOW:HIGH:ORIG]' -> HF rope_scaling dict, or None. llama3
    defaults: LOW 1, HIGH 4 (Llama 3.1's), ORIG max_pos / F."""
    if s is None or s == "none":
        return None
    kind, _, rest = s.partition(":")
    vals = rest.split(":") if rest else []
    try:
        if vals and not float(vals[0]) > 0:
            raise ValueError("factor must be positive")
        if kind == "linear" and len(vals) == 1:
            return {"factor": float(vals[0]), "rope_type": "linear"}
        if kind == "llama3" and len(vals) in (1, 4):
            factor = float(vals[0])
            # By default the "original" context is max_pos / factor, as in a real extension,
            # which for small head_dim still puts frequencies in all three llama3 bands.
            low, high, orig = (1.0, 4.0, max(1, int(max_pos / factor))) if len(vals) == 1 else (
                float(vals[1]), float(vals[2]), int(vals[3]))
            if not 0 < low < high or orig <= 0:
                raise ValueError("need 0 < LOW < HIGH and ORIG > 0")
            return {"factor": factor, "high_freq_factor": high, "low_freq_factor": low,
                    "original_max_position_embeddings": orig, "rope_type": "llama3"}
    except ValueError:
        pass
    raise SystemExit(f"--rope-scaling: expected linear:F or llama3:F[:LOW:HIGH:ORIG], got {s!r}")


def llama3_rope_factors(head_dim, theta, rs):
    """Per-frequency divisors of llama3 scaling, as GGUF stores them in rope_freqs.weight."""
    factor, low, high = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
    orig = rs["original_max_position_embeddings"]
    low_wavelen, high_wavelen = orig / low, orig / high
    out = []
    for i in range(0, head_dim, 2):
        freq = 1.0 / (theta ** (i / head_dim))
        wavelen = 2 * math.pi / freq
        if wavelen < high_wavelen:
            out.append(1.0)
        elif wavelen > low_wavelen:
            out.append(factor)
        else:
            smooth = (orig / wavelen - low) / (high - low)
            out.append(1.0 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


# ---- tokenizer (GGUF) ----


def byte_chars():
    """GPT-2's byte-level alphabet: the character standing for each byte 0..255."""
    keep = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) +
            list(range(ord("®"), ord("ÿ") + 1)))
    chars, extra = {}, 0
    for b in range(256):
        if b in keep:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


def make_vocab(v):
    """V tokens: 3 control tokens, the 256 byte symbols, then BPE merges of ' '+letters."""
    tokens = ["<unk>", "<s>", "</s>"] + byte_chars()
    types = [3, 3, 3] + [1] * 256  # 3 = control, 1 = normal (llama.cpp's token types)
    merges = []
    bc = byte_chars()
    letters = [bc[ord(c)] for c in "etaoinshrdlucmfwypvbgkjqxz"]
    level = [bc[ord(" ")]] + letters
    while len(tokens) < v:
        nxt = []
        for left in level:
            for right in letters:
                if len(tokens) >= v:
                    break
                tokens.append(left + right)
                types.append(1)
                merges.append(f"{left} {right}")
                nxt.append(left + right)
        level = nxt
    return tokens[:v], types[:v], merges


# ---- Hugging Face directory ----


def hf_config(a):
    arch_name = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM",
                 "qwen3": "Qwen3ForCausalLM"}[a.arch]
    c = {
        "architectures": [arch_name],
        "attention_dropout": 0.0,
        "bos_token_id": BOS_ID,
        "eos_token_id": EOS_ID,
        "head_dim": a.head_dim,
        "hidden_act": "silu",
        "hidden_size": a.dim,
        "initializer_range": 0.02,
        "intermediate_size": a.hidden,
        "max_position_embeddings": a.max_pos,
        "model_type": a.arch,
        "num_attention_heads": a.heads,
        "num_hidden_layers": a.layers,
        "num_key_value_heads": a.kv_heads,
        "rms_norm_eps": a.eps,
        "rope_scaling": a.rope_scaling_hf,
        "rope_theta": a.rope_theta,
        "tie_word_embeddings": a.tie,
        "torch_dtype": {"f32": "float32", "f16": "float16", "bf16": "bfloat16"}[a.dtype],
        "use_cache": True,
        "vocab_size": a.vocab,
    }
    if a.arch == "llama":
        c.update({"attention_bias": False, "mlp_bias": False, "pretraining_tp": 1})
    else:
        c.update({"max_window_layers": a.layers, "sliding_window": None,
                  "use_sliding_window": False})
        if a.arch == "qwen3":
            c["attention_bias"] = False
    return c


def st_bytes(w, dtype):
    if dtype == "f32":
        return "F32", w.astype("<f4").tobytes()
    if dtype == "f16":
        return "F16", w.astype("<f2").tobytes()
    return "BF16", f32_to_bf16_bits(w).astype("<u2").tobytes()


def write_safetensors(path, tensors, dtype):
    """tensors: [(name, float32 array)]. Header keys and data in name order; header padded with
    spaces to a multiple of 8 so every tensor's data is 8-byte aligned in the file."""
    header = {"__metadata__": {"format": "pt"}}
    blobs, off = [], 0
    for name, w in sorted(tensors, key=lambda t: t[0]):
        st_dtype, b = st_bytes(w, dtype)
        header[name] = {"dtype": st_dtype, "shape": list(w.shape),
                        "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    return off


def split_shards(weights, n, dtype):
    """Splits weights (in generation order) into n contiguous groups of about equal bytes."""
    esize = 4 if dtype == "f32" else 2
    sizes = [w.size * esize for _, w in weights]
    total = sum(sizes)
    groups, cur, acc = [], [], 0
    for i, (item, size) in enumerate(zip(weights, sizes)):
        cur.append(item)
        acc += size
        left_items, left_groups = len(weights) - i - 1, n - len(groups) - 1
        if left_groups > 0 and (acc >= total * (len(groups) + 1) / n or left_items == left_groups):
            groups.append(cur)
            cur = []
    groups.append(cur)
    assert len(groups) == n and all(groups)
    return groups


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")


def write_hf(a, weights):
    os.makedirs(a.out, exist_ok=True)
    write_json(os.path.join(a.out, "config.json"), hf_config(a))
    write_json(os.path.join(a.out, "generation_config.json"),
               {"bos_token_id": BOS_ID, "eos_token_id": EOS_ID})
    if a.shards == 1:
        write_safetensors(os.path.join(a.out, "model.safetensors"), weights, a.dtype)
        return
    weight_map, total = {}, 0
    for i, group in enumerate(split_shards(weights, a.shards, a.dtype)):
        fname = f"model-{i + 1:05d}-of-{a.shards:05d}.safetensors"
        total += write_safetensors(os.path.join(a.out, fname), group, a.dtype)
        for name, _ in group:
            weight_map[name] = fname
    write_json(os.path.join(a.out, "model.safetensors.index.json"),
               {"metadata": {"total_size": total}, "weight_map": weight_map})


# ---- GGUF ----


def gguf_name(hf):
    """HF tensor name -> GGUF tensor name."""
    fixed = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight":
             "output_norm.weight", "lm_head.weight": "output.weight"}
    if hf in fixed:
        return fixed[hf]
    parts = hf.split(".")  # model.layers.N.<module...>.<weight|bias>
    layer, module, kind = parts[2], ".".join(parts[3:-1]), parts[-1]
    module = {
        "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
        "self_attn.o_proj": "attn_output", "self_attn.q_norm": "attn_q_norm",
        "self_attn.k_norm": "attn_k_norm", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
        "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm",
        "post_attention_layernorm": "ffn_norm",
    }[module]
    return f"blk.{layer}.{module}.{kind}"


def permute_for_pairs(w, n_head):
    """Reorders each head's rows from halves [x0..x(d/2-1) | x(d/2)..] to interleaved pairs
    (x0, x(d/2), x1, x(d/2+1), ...), so adjacent-pair RoPE on the result equals rotate-half RoPE
    on the original. This is the row order llama.cpp's HF->GGUF converter gives llama q/k."""
    rows = w.shape[0]
    hd = rows // n_head
    return w.reshape(n_head, 2, hd // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


# spread of one element per unit of d: Q4_K d * sc * q - dmin * m (sc, m < 64, q < 16), Q5_K the
# same with q < 32, Q6_K d * sc * (q - 32) (sc signed 8-bit); and dmin per d centring the values
KQ_SPREAD = {"Q4_K": (170.0, 7.5), "Q5_K": (350.0, 15.5), "Q6_K": (1370.0, 0.0),
             "Q5_0": (9.2, 0.0), "Q5_1": (9.2, -15.5)}  # Q5: d per std; Q5_1's m = -15.5 d


def kquant_type(gname, dtype="kquant"):
    if dtype == "q5":
        return "Q5_0" if ".attn_" in gname else "Q5_1"
    if gname in ("token_embd.weight", "output.weight") or gname.endswith(
            ("attn_v.weight", "ffn_down.weight")):
        return "Q6_K"
    return "Q5_K" if gname.endswith(("attn_q.weight", "attn_k.weight")) else "Q4_K"


def kquant_tensors(a, weights):
    """{gguf name: (quantization type, uint8 rows of super-blocks)} for every matrix."""
    import gguf

    rng = np.random.RandomState(a.seed + 1000)
    out = {}
    for name, t in weights:
        if t.ndim != 2:
            continue
        gname = gguf_name(name)
        qn = kquant_type(gname, a.dtype)
        qtype = getattr(gguf.GGMLQuantizationType, qn)
        rows, cols = t.shape
        be, bb = gguf.GGML_QUANT_SIZES[qtype]  # elements and bytes of a block
        if cols % be:
            sys.exit(f"make_random_model: --dtype {a.dtype}: {name} has {cols} columns, not a "
                     f"multiple of {be}")
        raw = rng.randint(0, 256, size=(rows * cols // be, bb)).astype(np.uint8)
        per_d, dmin_per_d = KQ_SPREAD[qn]
        d = np.float16(float(np.std(t)) / per_d)
        if qn == "Q6_K":
            raw[:, bb - 2:] = np.frombuffer(d.tobytes(), np.uint8)
        else:
            raw[:, 0:2] = np.frombuffer(d.tobytes(), np.uint8)
            if qn != "Q5_0":  # its bytes 2..5 are the fifth bits
                raw[:, 2:4] = np.frombuffer(np.float16(float(d) * dmin_per_d).tobytes(), np.uint8)
        out[gname] = (qtype, raw.reshape(rows, cols // be * bb))
    return out


def write_gguf(a, weights, kq=None, twin_path=None):
    """kq: kquant_tensors' blocks, written as they are, or dequantized to F32 into twin_path."""
    import gguf

    kq = kq or {}
    arch = a.arch
    path = a.out if a.out.endswith(".gguf") else os.path.join(a.out, "model.gguf")
    if path != a.out and os.path.isfile(a.out) and not twin_path:
        os.remove(a.out)  # a single-file output of an earlier run at the directory's path
    if twin_path:
        path = twin_path
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    w = gguf.GGUFWriter(path, arch)
    w.add_name(f"random-{arch}")
    w.add_file_type(gguf.LlamaFileType.ALL_F32 if twin_path else
                    {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                     "bf16": gguf.LlamaFileType.MOSTLY_BF16,
                     "kquant": gguf.LlamaFileType.MOSTLY_Q4_K_M,
                     "q5": gguf.LlamaFileType.MOSTLY_Q5_1}[a.dtype])
    w.add_block_count(a.layers)
    w.add_context_length(a.max_pos)
    w.add_embedding_length(a.dim)
    w.add_feed_forward_length(a.hidden)
    w.add_head_count(a.heads)
    w.add_head_count_kv(a.kv_heads)
    w.add_rope_freq_base(a.rope_theta)
    w.add_layer_norm_rms_eps(a.eps)
    w.add_rope_dimension_count(a.head_dim)
    if a.head_dim != a.dim // a.heads or a.dim % a.heads:
        w.add_key_length(a.head_dim)
        w.add_value_length(a.head_dim)
    w.add_vocab_size(a.vocab)
    rs = a.rope_scaling_hf
    if rs and rs["rope_type"] == "linear":
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(rs["factor"])

    tokens, types, merges = make_vocab(a.vocab)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(BOS_ID)
    w.add_eos_token_id(EOS_ID)
    w.add_add_bos_token(False)
    if a.chat_template:
        w.add_chat_template(a.chat_template)

    raw = {"f16": gguf.GGMLQuantizationType.F16, "bf16": gguf.GGMLQuantizationType.BF16}
    for name, t in weights:
        if gguf_name(name) in kq:  # random blocks: no permutation, nothing to round
            qtype, raw = kq[gguf_name(name)]
            if twin_path:
                w.add_tensor(gguf_name(name), gguf.quants.dequantize(raw, qtype).astype(np.float32))
            else:
                w.add_tensor(gguf_name(name), raw, raw_dtype=qtype)
            continue
        if arch == "llama" and name.endswith("self_attn.q_proj.weight"):
            t = permute_for_pairs(t, a.heads)
        elif arch == "llama" and name.endswith("self_attn.k_proj.weight"):
            t = permute_for_pairs(t, a.kv_heads)
        t = np.ascontiguousarray(t)
        # As llama.cpp does, 1-D tensors (norms, biases) stay f32; values are already rounded to
        # the model dtype, so the model is the same as the HF one.
        if t.ndim == 1 or a.dtype == "f32":
            w.add_tensor(gguf_name(name), t.astype(np.float32))
        elif a.dtype == "f16":
            w.add_tensor(gguf_name(name), t.astype(np.float16), raw_dtype=raw["f16"])
        else:
            w.add_tensor(gguf_name(name), f32_to_bf16_bits(t), raw_dtype=raw["bf16"])
    if rs and rs["rope_type"] == "llama3":
        # llama.cpp carries llama3 scaling as per-frequency divisors, not as metadata.
        w.add_tensor("rope_freqs.weight", llama3_rope_factors(a.head_dim, a.rope_theta, rs))

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


# ---- command line ----


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", required=True, choices=["llama", "qwen2", "qwen3"])
    ap.add_argument("--format", required=True, choices=["hf", "gguf"])
    ap.add_argument("--out", required=True,
                    help="directory (hf); .gguf file or directory for model.gguf (gguf)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--layers", type=int, required=True)
    ap.add_argument("--dim", type=int, required=True)
    ap.add_argument("--heads", type=int, required=True)
    ap.add_argument("--kv-heads", type=int, help="default: --heads")
    ap.add_argument("--head-dim", type=int, help="default: dim / heads")
    ap.add_argument("--hidden", type=int, required=True, help="MLP intermediate size")
    ap.add_argument("--vocab", type=int, required=True)
    ap.add_argument("--tie", action="store_true", help="tie lm_head to the embeddings")
    ap.add_argument("--dtype", default="f32", choices=["f32", "f16", "bf16", "kquant", "q5"])
    ap.add_argument("--dequantized-twin", help="kquant: also write the model dequantized to F32 "
                    "to this .gguf path")
    ap.add_argument("--shards", type=int, default=1, help="hf only: safetensors shards")
    ap.add_argument("--max-pos", type=int, default=2048)
    ap.add_argument("--rope-theta", type=float, default=10000.0)
    ap.add_argument("--rope-scaling", help="linear:F or llama3:F[:LOW:HIGH:ORIG]")
    ap.add_argument("--eps", type=float, default=1e-5)
    ap.add_argument("--chat-template", help="gguf only: tokenizer.chat_template (the models have "
                    "none by default)")
    a = ap.parse_args(argv)

    if a.kv_heads is None:
        a.kv_heads = a.heads
    for k in ("layers", "dim", "heads", "kv_heads", "hidden", "vocab", "shards", "max_pos"):
        if getattr(a, k) <= 0:
            ap.error(f"--{k.replace('_', '-')} must be positive")
    if a.head_dim is None:
        if a.dim % a.heads:
            ap.error("--dim must be divisible by --heads unless --head-dim is given")
        a.head_dim = a.dim // a.heads
    if a.head_dim <= 0 or a.head_dim % 2:
        ap.error("--head-dim must be positive and even")
    if a.heads % a.kv_heads:
        ap.error("--heads must be a multiple of --kv-heads")
    if a.vocab <= max(BOS_ID, EOS_ID):
        ap.error(f"--vocab must exceed {max(BOS_ID, EOS_ID)}")
    if a.chat_template and a.format != "gguf":
        ap.error("--chat-template applies to --format gguf only")
    if a.dtype in ("kquant", "q5") and a.format != "gguf":
        ap.error(f"--dtype {a.dtype} applies to --format gguf only")
    if a.dequantized_twin and a.dtype not in ("kquant", "q5"):
        ap.error("--dequantized-twin applies to --dtype kquant or q5 only")
    if a.format == "gguf" and a.shards != 1:
        ap.error("--shards applies to --format hf only")
    if a.eps <= 0 or a.rope_theta <= 0:
        ap.error("--eps and --rope-theta must be positive")
    a.rope_scaling_hf = parse_rope_scaling(a.rope_scaling, a.max_pos)
    per_layer = 9 + {"llama": 0, "qwen2": 3, "qwen3": 2}[a.arch]
    n_tensors = 2 + a.layers * per_layer + (not a.tie)
    if a.shards > n_tensors:
        ap.error(f"--shards {a.shards} exceeds the {n_tensors} tensors")
    return a


def main(argv=None):
    a = parse_args(sys.argv[1:] if argv is None else argv)
    weights = make_weights(a)
    if a.format == "hf":
        write_hf(a, weights)
    elif a.dtype in ("kquant", "q5"):
        kq = kquant_tensors(a, weights)
        write_gguf(a, weights, kq)
        if a.dequantized_twin:
            twin = a.dequantized_twin
            if not os.path.dirname(twin):  # a bare name: beside the model
                model = a.out if a.out.endswith(".gguf") else os.path.join(a.out, "model.gguf")
                twin = os.path.join(os.path.dirname(model), twin)
            write_gguf(a, weights, kq, twin)
    else:
        write_gguf(a, weights)


if __name__ == "__main__":
    main()
