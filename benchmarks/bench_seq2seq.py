"""Benchmarks for the sequence-to-sequence stages. A script, not a test: it prints numbers.

(a) Dates: :class:`~coursekit.seq2seq.BahdanauEncoderDecoder` on :func:`~coursekit.data.date_task`, trained for at
    most ``--date-budget`` seconds; exact match on the held-out test dates and the wall time it took.
(b) Length sweep: the baseline (:class:`~coursekit.seq2seq.RNNEncoderDecoder`, one fixed-size context) against
    stage 1 (Bahdanau attention), same sizes, same wall-clock budget, on lists of 1-5 numbers in words -> digits
    (``"twenty one , four"`` -> ``2 1 , 4``; 1 to 34 words). Exact match by input length; the plot goes to ``--plot``.
(c) Decoding throughput: batched greedy decoding (and beam search) in sequences per second.

Usage::

    python benchmarks/bench_seq2seq.py --plot length_sweep.png            # about 6 minutes on 2 busy CPU cores
    python benchmarks/bench_seq2seq.py --plot /tmp/sweep.png --quick      # smoke run, about 1 minute
"""

from __future__ import annotations

import argparse
import os
import random
import time
from collections import defaultdict
from pathlib import Path
from typing import NamedTuple

import matplotlib

matplotlib.use("Agg")

import torch  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from coursekit.data import (  # noqa: E402
    TokenPair,
    TranslationDataset,
    Vocab,
    date_task,
    make_loader,
    number_words,
    split_pairs,
)
from coursekit.decoding import beam_search, greedy_decode  # noqa: E402
from coursekit.device import get_device  # noqa: E402
from coursekit.seq2seq import (  # noqa: E402
    BahdanauConfig,
    BahdanauEncoderDecoder,
    EncoderDecoder,
    RNNConfig,
    RNNEncoderDecoder,
)
from coursekit.train import evaluate, train  # noqa: E402
from coursekit.viz import plot_length_sweep  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--plot", type=Path, default=Path("length_sweep.png"), help="where to save the sweep plot")
    parser.add_argument("--quick", action="store_true", help="small data and budgets: a smoke run")
    parser.add_argument("--date-budget", type=float, default=None, help="seconds for (a); default 180 (quick: 20)")
    parser.add_argument("--sweep-budget", type=float, default=None,
                        help="seconds per model in (b); default 120 (quick: 15)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads; 1 is faster than 2 for these small models on busy shared cores")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def to_loader(pairs: list[TokenPair], src_vocab: Vocab, tgt_vocab: Vocab, batch_size: int, shuffle: bool):
    return make_loader(TranslationDataset(pairs, src_vocab, tgt_vocab), batch_size, shuffle)


# ----- (a) dates ------------------------------------------------------------------------------------------


def bench_dates(args: argparse.Namespace, device: torch.device) -> tuple[dict[str, float], EncoderDecoder, list]:
    task = date_task(n=3_000 if args.quick else 20_000, seed=args.seed)
    print(f"\n(a) dates: {task}")
    train_loader = to_loader(task.train, task.src_vocab, task.tgt_vocab, 64, shuffle=True)
    valid_loader = to_loader(task.valid[:500], task.src_vocab, task.tgt_vocab, 500, shuffle=False)
    torch.manual_seed(args.seed)
    config = BahdanauConfig(len(task.src_vocab), len(task.tgt_vocab), embed_dim=32, hidden_dim=64, attention_dim=64)
    model = BahdanauEncoderDecoder(config)
    start = time.perf_counter()
    history = train(model, train_loader, epochs=3, time_budget_s=args.date_budget, lr=3e-3, device=device,
                    valid_loader=valid_loader, seed=args.seed)
    train_s = time.perf_counter() - start
    test = evaluate(model, to_loader(task.test, task.src_vocab, task.tgt_vocab, 500, False), device=device)
    return ({"exact_match": test["exact_match"], "token_accuracy": test["token_accuracy"], "train_s": train_s,
             "steps": len(history.loss), "epochs": len(history.epochs), "n_test": len(task.test),
             "params": sum(p.numel() for p in model.parameters())}, model, task)


# ----- (b) length sweep -----------------------------------------------------------------------------------


def number_list_pairs(n: int, seed: int, max_numbers: int = 5, below: int = 10_000) -> list[TokenPair]:
    """Lists of 1 to ``max_numbers`` numbers in English words -> their digits, separated by commas:
    ``"twenty one , three thousand four"`` -> ``2 1 , 3 0 0 4``. Sources run from 1 to 34 words, and the
    amount the decoder must reproduce grows with them: a test of how much one fixed-size context can hold."""
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        src: list[str] = []
        tgt: list[str] = []
        for i in range(rng.randint(1, max_numbers)):
            number = rng.randrange(below)
            separator = [","] if i else []
            src += separator + number_words(number, "en")
            tgt += separator + number_words(number, "digits")
        pairs.append((src, tgt))
    return pairs


def length_bucket(n: int, width: int = 8) -> str:
    low = (n - 1) // width * width + 1
    return f"{low}-{low + width - 1}"


class SweepResult(NamedTuple):
    exact_match: dict[str, dict[str, float]]  # model name -> length bucket -> exact match
    steps: dict[str, int]  # model name -> optimizer steps done within the budget
    models: dict[str, EncoderDecoder]
    bucket_sizes: dict[str, int]
    test_pairs: list[TokenPair]
    vocabs: tuple[Vocab, Vocab]


def bench_length_sweep(args: argparse.Namespace, device: torch.device) -> SweepResult:
    pairs = number_list_pairs(4_000 if args.quick else 30_000, args.seed)
    train_pairs, _, test_pairs = split_pairs(pairs, fractions=(0.85, 0.05, 0.10), seed=args.seed)
    src_vocab, tgt_vocab = Vocab.build(s for s, _ in train_pairs), Vocab.build(t for _, t in train_pairs)
    print(f"\n(b) length sweep: {len(train_pairs)} training pairs, {len(test_pairs)} test pairs, "
          f"sources of {min(len(s) for s, _ in pairs)}-{max(len(s) for s, _ in pairs)} words")
    buckets: dict[str, list[TokenPair]] = defaultdict(list)
    for pair in sorted(test_pairs, key=lambda p: len(p[0])):
        buckets[length_bucket(len(pair[0]))].append(pair)
    sizes = dict(src_vocab_size=len(src_vocab), tgt_vocab_size=len(tgt_vocab), embed_dim=64, hidden_dim=64)
    stages = [("baseline RNN", RNNEncoderDecoder, RNNConfig(**sizes)),
              ("stage 1 Bahdanau", BahdanauEncoderDecoder, BahdanauConfig(**sizes, attention_dim=64))]
    result = SweepResult({}, {}, {}, {b: len(g) for b, g in buckets.items()}, test_pairs, (src_vocab, tgt_vocab))
    for name, model_class, config in stages:
        torch.manual_seed(args.seed)
        model = model_class(config)
        history = train(model, to_loader(train_pairs, src_vocab, tgt_vocab, 128, shuffle=True), lr=3e-3,
                        time_budget_s=args.sweep_budget, device=device, seed=args.seed)
        result.exact_match[name] = {
            bucket: evaluate(model, to_loader(group, src_vocab, tgt_vocab, 512, False), device=device)["exact_match"]
            for bucket, group in tqdm(buckets.items(), desc=f"evaluating {name}", leave=False)
        }
        result.steps[name], result.models[name] = len(history.loss), model
    ax = plot_length_sweep(result.exact_match, title="Lists of numbers in words -> digits, same training time",
                           xlabel="source length (words)", ylabel="exact match on held-out lists")
    ax.figure.savefig(args.plot, dpi=120, bbox_inches="tight")
    return result


# ----- (c) throughput -------------------------------------------------------------------------------------


@torch.no_grad()
def decoding_throughput(model: EncoderDecoder, *, pairs: list[TokenPair], vocabs: tuple[Vocab, Vocab],
                        batch_size: int, max_len: int, device: torch.device, beam_size: int = 0,
                        limit: int | None = None) -> float:
    """Sequences per second, batches built beforehand (only encoding + decoding is timed)."""
    model.eval().to(device)
    batches = [b.to(device) for b in to_loader(pairs[:limit], *vocabs, batch_size, shuffle=False)]
    kwargs = dict(start_id=1, stop_id=2, max_len=max_len)
    start = time.perf_counter()
    for batch in tqdm(batches, desc=f"decoding, batch {batch_size}" + (f", beam {beam_size}" if beam_size else ""),
                      leave=False):
        if beam_size:
            beam_search(model, batch.src, batch.src_key_padding_mask, beam_size=beam_size, **kwargs)
        else:
            greedy_decode(model, batch.src, batch.src_key_padding_mask, **kwargs)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return sum(b.src.size(0) for b in batches) / (time.perf_counter() - start)


def main() -> None:
    args = parse_args()
    args.date_budget = args.date_budget or (20.0 if args.quick else 180.0)
    args.sweep_budget = args.sweep_budget or (15.0 if args.quick else 120.0)
    torch.set_num_threads(args.threads)
    device = get_device(args.device)
    conditions = (f"torch {torch.__version__}, device {device}, {args.threads} torch thread(s), {os.cpu_count()} cores "
                  f"shared with other jobs, load average {os.getloadavg()[0]:.1f} at start, "
                  f"{'quick' if args.quick else 'full'} run")
    print("Conditions:", conditions)
    started = time.perf_counter()

    dates, date_model, task = bench_dates(args, device)
    sweep = bench_length_sweep(args, device)

    print("\n(c) decoding throughput")
    limit = 256 if args.quick else None
    date_data = dict(pairs=task.test, vocabs=(task.src_vocab, task.tgt_vocab), max_len=12, device=device)
    throughput = {f"stage 1 Bahdanau, dates, greedy, batch {b}": decoding_throughput(
        date_model, batch_size=b, limit=64 if b == 1 else limit, **date_data) for b in (1, 64, 512)}
    throughput["stage 1 Bahdanau, dates, beam 4, batch 64"] = decoding_throughput(
        date_model, batch_size=64, beam_size=4, limit=limit, **date_data)
    for name, model in sweep.models.items():
        throughput[f"{name}, number lists, greedy, batch 512"] = decoding_throughput(
            model, pairs=sweep.test_pairs, vocabs=sweep.vocabs, batch_size=512, max_len=25, device=device, limit=limit)

    print("\n" + "=" * 100 + f"\nSummary ({conditions})\n" + "=" * 100)
    print(f"(a) Bahdanau on dates: exact match {dates['exact_match']:.2%} on {dates['n_test']} held-out test dates "
          f"(token accuracy {dates['token_accuracy']:.2%}); trained {dates['train_s']:.0f} s wall "
          f"({dates['steps']} steps, {dates['epochs']} epochs, {dates['params']:,} parameters)")
    names = list(sweep.exact_match)
    print(f"(b) length sweep, exact match by source length, {args.sweep_budget:.0f} s of training each "
          f"({', '.join(f'{n}: {sweep.steps[n]} steps' for n in names)})")
    print(f"    {'words':>10} {'n test':>7} " + " ".join(f"{n:>17}" for n in names))
    for bucket, size in sweep.bucket_sizes.items():
        print(f"    {bucket:>10} {size:>7} " + " ".join(f"{sweep.exact_match[n][bucket]:>17.1%}" for n in names))
    print(f"    plot saved to {args.plot}")
    print("(c) decoding throughput")
    for name, value in throughput.items():
        print(f"    {name:<48} {value:>9.0f} sequences/s")
    print(f"total wall time {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
