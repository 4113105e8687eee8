#!/usr/bin/env python3
"""Writes a GGUF model cut to its first N transformer blocks, every kept tensor byte for byte.

For a machine that can receive only a few tens of MB (the GPU check's machine): the default
model's 30 blocks do not fit beside the build, its first few do. The metadata is copied with
<arch>.block_count set to N; the embeddings, the final norm, the output matrix and the
tokenizer are kept as they are. The result is a different model (its own logits, not the
reference's); it serves comparisons of two backends on real weights.

    .venv/bin/python tools/truncate_gguf.py IN.gguf OUT.gguf --blocks N
"""
import argparse
import re

import gguf


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--blocks", type=int, required=True)
    a = ap.parse_args()
    r = gguf.GGUFReader(a.src)
    arch = r.fields["general.architecture"].contents()
    count_key = f"{arch}.block_count"
    if a.blocks < 1 or a.blocks > r.fields[count_key].contents():
        raise SystemExit(f"--blocks must be 1..{r.fields[count_key].contents()}")
    w = gguf.GGUFWriter(a.dst, arch)
    for name, f in r.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue
        if name == count_key:
            w.add_uint32(name, a.blocks)
            continue
        vtype = f.types[0]
        if vtype == gguf.GGUFValueType.ARRAY:
            w.add_key_value(name, f.contents(), vtype, sub_type=f.types[-1])
        else:
            w.add_key_value(name, f.contents(), vtype)
    kept = []
    for t in r.tensors:
        m = re.match(r"blk\.(\d+)\.", t.name)
        if m and int(m.group(1)) >= a.blocks:
            continue
        kept.append(t)
        w.add_tensor_info(t.name, t.data.shape, t.data.dtype, t.n_bytes, raw_dtype=t.tensor_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    for t in kept:
        w.write_tensor_data(t.data)
    w.close()
    print(f"{a.dst}: {len(kept)} tensors, {a.blocks} blocks")


if __name__ == "__main__":
    main()
