"""The arc's cost, measured: one training step against sequence length n, and one decoder step against source
length N, for the baseline and stages 1-4 of coursekit.arc, in one process. A script, not a test: it prints numbers.

Ratios are against stage 3, attention without RNN, the model with no chain of sequential operations: a ratio that
grows with n is a model whose step has a chain as long as the sequence (an RNN reads one position after another;
stage 1's decoder cannot even batch its target positions, because its attention needs the previous state).

On a CPU with one thread every model computes one number after another, so the times count arithmetic plus the
overhead of each sequential step; on a GPU the positions of a step without a chain run in parallel, and the gap
grows (``--device cuda``).

Usage::

    python benchmarks/bench_arc.py                        # CPU, one thread, n and N = 16, 64, 256 (about 1 minute)
    python benchmarks/bench_arc.py --lengths 16 64 256 1024 --threads 2
    python benchmarks/bench_arc.py --device cuda --lengths 64 256 1024
"""

from __future__ import annotations

import argparse

import torch

from coursekit import arc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if max(args.lengths) > arc.ATTENTION_SIZES["max_len"]:
        parser.error(f"the arc's attention models hold {arc.ATTENTION_SIZES['max_len']} positions")
    timings = arc.measure_timings(step_lengths=args.lengths, source_lengths=args.lengths, batch_size=args.batch_size,
                                  repeats=args.repeats, device=args.device)
    print(f"device {args.device}, {timings.threads} thread(s), batch {args.batch_size}; best of {args.repeats}")
    for title, table in (("one training step (forward, backward, update), S = T = n", timings.training_step),
                         ("one decoder step after encoding N source tokens (no gradients)", timings.decoder_step)):
        print(f"\n{title}: milliseconds, and the ratio to stage 3")
        print(f"{'model':<36}" + "".join(f"{f'n = {n}':>20}" for n in args.lengths))
        for key in arc.STAGE_KEYS:
            cells = "".join(f"{1000 * table[key][n]:10.2f} ({table[key][n] / table['stage3'][n]:5.1f}x)"
                            for n in args.lengths)
            print(f"{arc.RUNS[key].label:<36}{cells}")


if __name__ == "__main__":
    main()
