#!/usr/bin/env python3
"""bench_tracing.py — what tracing costs: `lantern serve` with tracing off, on (the default
detail: frontend and engine spans of every request) and with --collect-detailed-traces all (a
step span per step and per-rank worker spans), exporting over OTLP/gRPC to a real local receiver
(grpcio + opentelemetry-proto's TraceServiceServicer, in this process), in one interleaved run.

    .venv/bin/python bench/bench_tracing.py --concurrency 1,8,32 --reps 3 [--tensor-parallel-size 2]

Prints output tok/s, TTFT and ITL medians per configuration and the ratios to tracing off
(goal: on/off >= 0.99, all/off >= 0.97 throughput), and how many spans the receiver got.
"""
import argparse
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests", "unit"))
import bench_builds as bb  # noqa: E402
from otlp_receivers import GrpcReceiver  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", default=os.path.join(bb.ROOT, "build", "lantern"))
    ap.add_argument("--model")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--tensor-parallel-size", type=int, default=1)
    ap.add_argument("--concurrency", default="1,8,32")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--input-len", type=int, default=128)
    ap.add_argument("--output-len", type=int, default=128)
    args = ap.parse_args()
    args.server_arg = ["--tensor-parallel-size", str(args.tensor_parallel_size)]
    model = args.model or bb.default_model()
    rec = GrpcReceiver()
    ep = f"http://127.0.0.1:{rec.port}"
    sides = {"off": [], "on": ["--otlp-traces-endpoint", ep],
             "all": ["--otlp-traces-endpoint", ep, "--collect-detailed-traces", "all"]}
    os.environ["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"] = "grpc"
    concs = [int(c) for c in args.concurrency.split(",")]
    names = list(sides)
    runs = {s: {c: [] for c in concs} for s in names}
    log = tempfile.NamedTemporaryFile("w", prefix="bench_tracing.", suffix=".log", delete=False)
    turn = 0
    for rep in range(args.reps):
        for c in concs:
            order = names[turn % 3:] + names[:turn % 3]  # rotate who goes first
            turn += 1
            for side in order:
                f = bb.figures(bb.run_one(args.binary, model, args.threads, c, args, log,
                                          sides[side]))
                runs[side][c].append(f)
                print(f"rep {rep + 1} C={c:<3} {side:>3}: " +
                      ", ".join(f"{k} {v:.1f}" for k, v in f.items()), file=sys.stderr,
                      flush=True)
    bb.table(runs, concs, args.reps, names)
    print(f"\nmodel {os.path.basename(model)}, {args.threads} threads, tensor parallel "
          f"{args.tensor_parallel_size}, {args.input_len} in / {args.output_len} out tokens, "
          f"streaming; the receiver got {len(rec.spans())} spans in all; logs in {log.name}")
    rec.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
