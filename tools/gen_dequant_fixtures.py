#!/usr/bin/env python3
"""gen_dequant_fixtures.py — writes the dequantization fixtures that tests/unit/test_dequant.c
checks kernels/cpu/dtype.c against.

The reference is the gguf Python package (gguf.quants.dequantize), an implementation independent
of ours. For each element type we store a few blocks of raw bytes and the float32 values gguf
decodes them to.

Where the package can quantize (F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) the first blocks come
from quantizing seeded random data (one block all zeros, to cover a zero scale). Every quantized
type also gets blocks of uniformly random bytes, so every bit of every field is exercised; their
f16 scale fields are overwritten with small finite values so the reference stays finite. The
K-quants (Q2_K..Q6_K) can only be dequantized by gguf-py, so they are random bytes only.

File layout (all little-endian), tests/fixtures/dequant/<TYPE>.bin:

    offset  size            field
    0       u32             magic 0x51445446 ("FTDQ" in file byte order: 46 54 44 51)
    4       u32             GGML type id (kn_dtype_t)
    8       u64             n_elems: number of elements (a multiple of the block size)
    16      u64             n_bytes: size of the raw block data
    24      n_bytes         raw blocks, exactly as they would sit in a GGUF tensor
    24+n_bytes  4*n_elems   reference float32 values

Usage: .venv/bin/python tools/gen_dequant_fixtures.py [out_dir]
(default out_dir: tests/fixtures/dequant next to this script's repository root). Deterministic:
rerunning produces identical files.
"""

import os
import struct
import sys

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import quants
from gguf.constants import GGML_QUANT_SIZES

MAGIC = 0x51445446
SEED = 20250207

# Byte offsets of the f16 scale fields inside one block, per type (from the block layouts).
F16_FIELDS = {
    T.Q4_0: [0],
    T.Q4_1: [0, 2],
    T.Q5_0: [0],
    T.Q5_1: [0, 2],
    T.Q8_0: [0],
    T.Q2_K: [80, 82],  # scales[16], qs[64], d, dmin
    T.Q3_K: [108],  # hmask[32], qs[64], scales[12], d
    T.Q4_K: [0, 2],  # d, dmin, scales[12], qs[128]
    T.Q5_K: [0, 2],  # d, dmin, scales[12], qh[32], qs[128]
    T.Q6_K: [208],  # ql[128], qh[64], scales[16], d
}

QUANTIZABLE = [T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0]
K_QUANTS = [T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K]


def random_blocks(rng, qtype, n_blocks):
    """Uniformly random block bytes with finite, small f16 scales."""
    _, type_size = GGML_QUANT_SIZES[qtype]
    raw = rng.integers(0, 256, size=(n_blocks, type_size), dtype=np.uint8)
    for off in F16_FIELDS[qtype]:
        # Magnitudes from 1e-4 to ~1, both signs: realistic scales and mins.
        scale = (rng.standard_normal(n_blocks) * np.exp(rng.uniform(-9, 0, n_blocks)))
        raw[:, off : off + 2] = scale.astype(np.float16).view(np.uint8).reshape(n_blocks, 2)
    return raw


def quantized_blocks(rng, qtype, n_blocks):
    block_size, _ = GGML_QUANT_SIZES[qtype]
    x = rng.standard_normal((n_blocks, block_size)).astype(np.float32)
    x *= np.exp(rng.uniform(-6, 2, (n_blocks, 1))).astype(np.float32)
    x[0, :] = 0.0  # zero scale
    return quants.quantize(x.reshape(1, -1), qtype).reshape(n_blocks, -1)


def float_data(rng, qtype):
    """Random values plus the special cases: signed zeros, infinities, NaN, subnormals, extremes."""
    x = (rng.standard_normal(96) * np.exp(rng.uniform(-12, 8, 96))).astype(np.float32)
    if qtype == T.F16:
        special = np.array([0x0000, 0x8000, 0x7C00, 0xFC00, 0x7E00, 0x0001, 0x03FF, 0x8001,
                            0x0400, 0x7BFF, 0xFBFF, 0x3C00, 0xBC00, 0x3555, 0x0200, 0x83FF],
                           dtype=np.uint16)
        return np.concatenate([x.astype(np.float16).view(np.uint16), special]).view(np.uint8)
    if qtype == T.BF16:
        special = np.array([0x0000, 0x8000, 0x7F80, 0xFF80, 0x7FC0, 0x0001, 0x007F, 0x8001,
                            0x0080, 0x7F7F, 0xFF7F, 0x3F80, 0xBF80, 0x3EAB, 0x0040, 0x807F],
                           dtype=np.uint16)
        return np.concatenate([quants.quantize(x, T.BF16).view(np.uint16), special]).view(np.uint8)
    special = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45, -1e-45, 3.4028235e38,
                        -3.4028235e38, 1.0, -1.0, 1.1754944e-38, 5.9e-39, 0.1, -2.5, 65504.0],
                       dtype=np.float32)
    return np.concatenate([x, special]).view(np.uint8)


def reference(raw, qtype):
    if qtype == T.F32:
        return raw.view(np.float32).copy()
    if qtype == T.F16:
        return raw.view(np.float16).astype(np.float32)
    # gguf's dequantize wants a row of bytes; one row holding every block.
    return quants.dequantize(raw.reshape(1, -1), qtype).reshape(-1).astype(np.float32)


def write_fixture(out_dir, qtype, raw):
    raw = np.ascontiguousarray(raw, dtype=np.uint8).reshape(-1)
    ref = reference(raw, qtype)
    block_size, type_size = GGML_QUANT_SIZES[qtype]
    assert raw.size % type_size == 0 and ref.size == raw.size // type_size * block_size
    path = os.path.join(out_dir, f"{qtype.name}.bin")
    with open(path, "wb") as f:
        f.write(struct.pack("<IIQQ", MAGIC, int(qtype), ref.size, raw.size))
        f.write(raw.tobytes())
        f.write(ref.astype("<f4").tobytes())
    print(f"{path}: {ref.size} elems, {raw.size} bytes, {os.path.getsize(path)} file bytes")


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    default_dir = os.path.join(root, "tests", "fixtures", "dequant")
    out_dir = sys.argv[1] if len(sys.argv) > 1 else default_dir
    os.makedirs(out_dir, exist_ok=True)
    rng = np.random.default_rng(SEED)

    for qtype in (T.F32, T.F16, T.BF16):
        write_fixture(out_dir, qtype, float_data(rng, qtype))
    for qtype in QUANTIZABLE:
        raw = np.concatenate([quantized_blocks(rng, qtype, 4), random_blocks(rng, qtype, 4)])
        write_fixture(out_dir, qtype, raw)
    for qtype in K_QUANTS:
        write_fixture(out_dir, qtype, random_blocks(rng, qtype, 4))


if __name__ == "__main__":
    main()
