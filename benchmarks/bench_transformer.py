"""Benchmark: the coursekit Transformer's quality, training speed against torch.nn.Transformer, and decoding speed.

1. Quality: train the default model of ``python -m coursekit.translate`` (D=128, 4 heads, 2 + 2 layers) on
   English -> German number words (0..9999, German cut into morphemes, 80/10/10 split by number) for at most
   ``--time-budget`` seconds; report exact match and chrF on the 1000 held-out test numbers, the wall time, and
   when validation exact match first reached 95%. Saves the cross-attention of ``--example`` to ``--plot`` and,
   next to it, the encoder and decoder self-attention, the learning-rate schedule and the positional encodings.
2. Training step (forward, label-smoothed loss, backward, Adam: ``coursekit.train.train_step`` without clipping,
   bf16 autocast on CUDA) against ``torch.nn.Transformer`` of the same size on the same batches, both in train
   mode with dropout 0.1; the two alternate, median of ``--reps``.
3. Greedy decoding of 64 tokens with and without the key/value cache (a STOP-free model so every run is
   exactly 64 steps), checking that both give the same tokens.
4. On CUDA only: training and decoding tokens/s of the base model (D=512, 6 + 6 layers) under bf16 autocast.

Run: python benchmarks/bench_transformer.py --plot out/cross_attention.png [--time-budget 300] [--threads 1]
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import statistics
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torch import Tensor, nn  # noqa: E402

from coursekit.data import TranslationDataset, make_loader, number_task  # noqa: E402
from coursekit.decoding import greedy_decode  # noqa: E402
from coursekit.masks import causal_mask  # noqa: E402
from coursekit.positional import SinusoidalPositionalEncoding  # noqa: E402
from coursekit.train import teacher_forced_loss, train_step  # noqa: E402
from coursekit.transformer import Transformer, TransformerConfig  # noqa: E402
from coursekit.translate import TranslateOptions, example_source, run, translate_with_attention  # noqa: E402
from coursekit.viz import plot_attention_grid, plot_lr_schedule, plot_positional_encodings  # noqa: E402


class TorchTransformer(nn.Module):
    """The same model around ``torch.nn.Transformer``: scaled embeddings + sinusoids, tied output layer."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.config, D = config, config.d_model
        self.src_embed, self.tgt_embed = nn.Embedding(config.src_vocab_size, D), nn.Embedding(config.tgt_vocab_size, D)
        self.positions = SinusoidalPositionalEncoding(D, config.max_len, config.dropout)
        self.transformer = nn.Transformer(D, config.nhead, config.num_encoder_layers, config.num_decoder_layers,
                                          config.dim_feedforward, config.dropout, activation=config.activation,
                                          batch_first=True, norm_first=config.norm_first)
        self.out = nn.Linear(D, config.tgt_vocab_size)
        self.out.weight = self.tgt_embed.weight

    def forward(self, src: Tensor, src_key_padding_mask: Tensor, tgt_in: Tensor) -> tuple[Tensor, None]:
        scale = math.sqrt(self.config.d_model)
        x = self.positions(self.src_embed(src) * scale)  # (B, S, D)
        y = self.positions(self.tgt_embed(tgt_in) * scale)  # (B, T, D)
        mask = causal_mask(tgt_in.size(1), device=tgt_in.device)  # (T, T)
        h = self.transformer(x, y, tgt_mask=mask, src_key_padding_mask=src_key_padding_mask,
                             memory_key_padding_mask=src_key_padding_mask, tgt_is_causal=True)
        return self.out(h), None  # (B, T, V)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_training_steps(models: dict[str, nn.Module], batches: list, reps: int,
                        device: torch.device) -> dict[str, float]:
    """Median seconds per training step of each model, alternating models step by step."""
    optimizers = {name: torch.optim.Adam(m.parameters(), lr=1e-4) for name, m in models.items()}
    smoothed = functools.partial(teacher_forced_loss, label_smoothing=0.1)
    times: dict[str, list[float]] = {name: [] for name in models}
    for rep in range(reps + 5):  # the first 5 warm up
        batch = batches[rep % len(batches)]
        for name, model in models.items():
            model.train()
            sync(device)
            start = time.perf_counter()
            train_step(model, batch, optimizers[name], loss_fn=smoothed, clip_grad_norm=None, device=device)
            sync(device)
            if rep >= 5:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def stop_free(config: TransformerConfig, stop_id: int, device: torch.device) -> Transformer:
    """A random model that never predicts [STOP], so greedy decoding always runs to max_len."""
    torch.manual_seed(0)
    model = Transformer(config).to(device).eval()
    with torch.no_grad():
        model.out.bias[stop_id] = -1e4
    return model


def time_decoding(model: Transformer, src: Tensor, mask: Tensor, steps: int, reps: int) -> dict[str, float]:
    """Median seconds of greedy decoding ``steps`` tokens with and without the cache; checks equal outputs."""
    results, outputs = {}, {}
    for cached in (True, False):
        model.use_kv_cache = cached
        times = []
        for _ in range(reps):
            sync(src.device)
            start = time.perf_counter()
            decoded = greedy_decode(model, src, mask, start_id=1, stop_id=2, max_len=steps)
            sync(src.device)
            times.append(time.perf_counter() - start)
        assert decoded.tokens.size(1) == steps
        results["cached" if cached else "uncached"], outputs[cached] = statistics.median(times), decoded.tokens
    model.use_kv_cache = True
    assert torch.equal(outputs[True], outputs[False]), "cached and uncached decoding disagree"
    return results


def quality(args: argparse.Namespace) -> TranslateOptions:
    options = TranslateOptions(task="en-de-numbers", lo=0, hi=10_000, time_budget_s=args.time_budget,
                               epochs=args.epochs, plot=args.plot, example=args.example, seed=args.seed,
                               device=args.device)
    print(f"\n1. Quality: en -> de number words 0..9999, D={options.d_model}, H={options.nhead}, "
          f"{options.num_layers}+{options.num_layers} layers, F={options.dim_feedforward}, dropout {options.dropout}, "
          f"batch {options.batch_size}, warm-up {options.warmup_steps}, label smoothing {options.label_smoothing}")
    start = time.perf_counter()
    result = run(options)
    wall = time.perf_counter() - start
    m = result.metrics
    reached = next((row for row in result.history.epochs if row.get("exact_match", 0) >= 0.95), None)
    print(f"   parameters: {sum(p.numel() for p in result.model.parameters()):,}")
    print(f"   trained {int(m['train_steps'])} steps ({len(result.history.epochs)} epochs) "
          f"in {m['train_time_s']:.1f} s; "
          f"whole run (data, training, validation, test, plot) {wall:.1f} s")
    if reached:
        print(f"   validation exact match first >= 95% after epoch {reached['epoch']} ({reached['step']} steps, "
              f"{reached['time_s']:.1f} s): {reached['exact_match']:.3f}")
    print(f"   TEST ({int(m['n'])} held-out numbers, greedy): exact match {m['exact_match']:.4f}, chrF {m['chrf']:.2f}")
    source = example_source(options)
    split = next((name for name in ("train", "valid", "test") if any(src == source for src, _ in
                                                                      getattr(result.task, name))), "none")
    if args.plot:
        save_other_plots(result.model, result.task, source, Path(args.plot), options)
        print(f"   example {options.example!r} ({' '.join(source)}; in the {split} split): "
              f"cross-attention -> {args.plot}")
    return options


def save_other_plots(model: Transformer, task, source: list[str], path: Path, options: TranslateOptions) -> None:
    """Encoder and decoder self-attention of the example, the learning-rate schedule and the positional encodings."""
    tokens, maps = translate_with_attention(model, source, task.src_vocab, task.tgt_vocab, device=options.device)
    print(f"   {' '.join(source)} -> {' '.join(tokens)}")
    targets = ["[START]"] + tokens[:-1]
    figures = {
        "encoder": plot_attention_grid(maps.encoder[0], keys=source, queries=source, title="Encoder self-attention",
                                       xlabel="source token (key)", ylabel="source token (query)"),
        "decoder_self": plot_attention_grid(maps.decoder_self[0], keys=targets, queries=targets,
                                            title="Decoder masked self-attention (row t sees inputs 0..t)",
                                            xlabel="decoder input (key)", ylabel="decoder input (query)"),
        "lr_schedule": plot_lr_schedule([options.d_model, 512], [options.warmup_steps, 4000], total_steps=20_000),
        "positional": plot_positional_encodings(64, options.d_model),
    }
    for name, figure in figures.items():
        target = path.with_name(f"{path.stem}_{name}{path.suffix}")
        figure.savefig(target, dpi=110, bbox_inches="tight")
        plt.close(figure)
        print(f"   {name} -> {target}")


def speed(args: argparse.Namespace, device: torch.device) -> None:
    task = number_task(0, 10_000, "en", "de")
    loader = make_loader(TranslationDataset(task.train, task.src_vocab, task.tgt_vocab), 64, shuffle=True)
    batches = [batch.to(device) for batch, _ in zip(loader, range(20))]
    print(f"\n2. Training step on {device.type} ({torch.get_num_threads()} threads), real batches of 64 "
          f"(coursekit.train.train_step: forward + label-smoothed loss + backward + Adam), median of {args.reps}")
    print(f"   {'model':<34}{'nn.Transformer (ms)':>21}{'coursekit (ms)':>16}{'ratio':>8}")
    for d_model, layers in ((128, 2), (256, 3)):
        config = TransformerConfig(len(task.src_vocab), len(task.tgt_vocab), d_model=d_model, nhead=4,
                                   num_encoder_layers=layers, num_decoder_layers=layers, dim_feedforward=2 * d_model,
                                   max_len=64)
        torch.manual_seed(0)
        models = {"torch": TorchTransformer(config).to(device), "coursekit": Transformer(config).to(device)}
        t = time_training_steps(models, batches, args.reps, device)
        print(f"   {f'D={d_model} H=4 L={layers}+{layers} F={2 * d_model}':<34}{t['torch'] * 1e3:>21.1f}"
              f"{t['coursekit'] * 1e3:>16.1f}{t['coursekit'] / t['torch']:>8.2f}")

    steps = 64
    print(f"\n3. Greedy decoding of {steps} tokens, batch 32, median of {args.decode_reps}")
    print(f"   {'model':<34}{'uncached (ms)':>15}{'cached (ms)':>13}{'speed-up':>10}")
    src_batch = next(iter(make_loader(TranslationDataset(task.test, task.src_vocab, task.tgt_vocab), 32,
                                      shuffle=False))).to(device)
    for d_model, layers in ((128, 2), (256, 4)):
        config = TransformerConfig(len(task.src_vocab), len(task.tgt_vocab), d_model=d_model, nhead=4,
                                   num_encoder_layers=layers, num_decoder_layers=layers, dim_feedforward=2 * d_model,
                                   dropout=0.0, max_len=128)
        model = stop_free(config, task.tgt_vocab.stop_id, device)
        t = time_decoding(model, src_batch.src, src_batch.src_key_padding_mask, steps, args.decode_reps)
        print(f"   {f'D={d_model} H=4 L={layers}+{layers}':<34}{t['uncached'] * 1e3:>15.1f}{t['cached'] * 1e3:>13.1f}"
              f"{t['uncached'] / t['cached']:>9.1f}x   (same tokens: yes)")


def cuda_throughput(args: argparse.Namespace) -> None:
    device = torch.device("cuda")
    task = number_task(0, 10_000, "en", "de")
    loader = make_loader(TranslationDataset(task.train, task.src_vocab, task.tgt_vocab), 256, shuffle=True)
    batches = [batch.to(device) for batch, _ in zip(loader, range(20))]
    config = TransformerConfig(len(task.src_vocab), len(task.tgt_vocab), max_len=128)  # the base model
    torch.manual_seed(0)
    models = {"torch": TorchTransformer(config).to(device), "coursekit": Transformer(config).to(device)}
    t = time_training_steps(models, batches, args.reps, device)
    tokens = statistics.mean(int((~b.tgt_key_padding_mask).sum()) for b in batches)
    print(f"\n4. CUDA, bf16 autocast, base model (D=512, 6+6 layers), batch 256: target tokens/s in training: "
          f"nn.Transformer {tokens / t['torch']:,.0f}, coursekit {tokens / t['coursekit']:,.0f} "
          f"(ratio {t['coursekit'] / t['torch']:.2f})")
    model = stop_free(dataclasses.replace(config, dropout=0.0), task.tgt_vocab.stop_id, device)
    batch = batches[0]
    with torch.autocast("cuda", dtype=torch.bfloat16):
        d = time_decoding(model, batch.src, batch.src_key_padding_mask, 64, args.decode_reps)
    n = batch.src.size(0) * 64
    print(f"   greedy decoding, 64 tokens x {batch.src.size(0)}: cached {n / d['cached']:,.0f} tokens/s, "
          f"uncached {n / d['uncached']:,.0f} tokens/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plot", help="PNG path for the cross-attention of the example (others are saved beside it)")
    parser.add_argument("--example", default="3442", help="number (or source words) to translate and plot")
    parser.add_argument("--time-budget", type=float, default=300.0, help="seconds of training at most")
    parser.add_argument("--epochs", type=int, default=8, help="epochs at most")
    parser.add_argument("--reps", type=int, default=30, help="timed training steps per model")
    parser.add_argument("--decode-reps", type=int, default=5, help="timed decoding runs")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (1 is fastest for these small models)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip-quality", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not args.skip_quality:
        quality(args)
    speed(args, torch.device(args.device))
    if torch.cuda.is_available():
        cuda_throughput(args)
    else:
        print("\n4. CUDA bf16 tokens/s: skipped, no GPU visible")


if __name__ == "__main__":
    main()
