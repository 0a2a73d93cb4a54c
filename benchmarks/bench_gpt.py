"""Benchmark: what the key/value cache buys GPT's generation, and where our GPT stands against Hugging Face's.

1. Greedy generation of N new tokens after a 16-token prompt, with and without the cache, for the book's
   character model (D=128, 4 layers) and a GPT-2-small-shaped model (D=768, 12 layers, random weights), at
   several lengths; the two alternate, median of ``--reps``; both must give the same tokens.
2. The same generation with Hugging Face's ``GPT2LMHeadModel.generate`` (its own cache) on the weights ours
   was copied from, as the "obvious alternative".
3. With ``--checkpoint``: the trained model's validation perplexity against its n-gram baselines.

Run: python benchmarks/bench_gpt.py [--reps 3] [--threads 1] [--checkpoint book/_data/gpt_shakespeare.pt]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from coursekit.gpt import GPT, GPTConfig, generate

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def timed(fn, reps: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(reps):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def compare(name: str, config: GPTConfig, lengths: list[int], reps: int, with_hf: bool) -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    hf = GPT2LMHeadModel(GPT2Config(vocab_size=config.vocab_size, n_positions=config.max_len, n_embd=config.d_model,
                                    n_layer=config.num_layers, n_head=config.nhead, bos_token_id=0,
                                    eos_token_id=0)).eval()
    model = GPT.from_hf_gpt2(hf).eval()
    prompt = torch.randint(0, config.vocab_size, (1, 16))
    print(f"\n{name}: D={config.d_model}, {config.num_layers} layers, context {config.max_len}")
    print(f"{'new tokens':>10} {'uncached s':>11} {'cached s':>9} {'speed-up':>9} {'HF cached s':>12} {'ours/HF':>8}")
    for n in lengths:
        t_plain = t_cache = 0.0
        plain_times, cache_times = [], []
        for _ in range(reps):  # alternate, so load on the machine hits both alike
            t_plain, plain = timed(lambda: generate(model, prompt, n, temperature=0, use_cache=False), 1)
            t_cache, cached = timed(lambda: generate(model, prompt, n, temperature=0, use_cache=True), 1)
            plain_times.append(t_plain)
            cache_times.append(t_cache)
            assert torch.equal(plain, cached), "cached and uncached generation differ"
        t_plain, t_cache = statistics.median(plain_times), statistics.median(cache_times)
        hf_text = ""
        if with_hf:
            t_hf, theirs = timed(lambda: hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=n,
                                                     do_sample=False, pad_token_id=0), reps)
            assert torch.equal(theirs, cached), "Hugging Face's greedy generation differs from ours"
            hf_text = f"{t_hf:12.3f} {t_cache / t_hf:8.2f}"
        print(f"{n:10d} {t_plain:11.3f} {t_cache:9.3f} {t_plain / t_cache:8.1f}x {hf_text}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--checkpoint", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), greedy decoding, batch 1")
    with torch.no_grad():
        compare("The book's character model", GPTConfig(vocab_size=83, max_len=512, d_model=128, nhead=4,
                                                        num_layers=4, dim_feedforward=512, dropout=0.0),
                [64, 256, 496], args.reps, with_hf=True)
        compare("GPT-2 small shape", GPTConfig(dropout=0.0), [32, 64], 1, with_hf=True)
    if args.checkpoint:
        from coursekit.gpt_train import load_checkpoint, perplexity, shakespeare_data

        model, _, _, extra = load_checkpoint(args.checkpoint)
        _, _, valid = shakespeare_data()
        ppl = perplexity(model, valid, device="cpu")
        print(f"\ncheckpoint {args.checkpoint}: validation perplexity {ppl:.2f}; baselines "
              + ", ".join(f"{k} {v:.2f}" for k, v in extra["baselines"].items()))


if __name__ == "__main__":
    main()
