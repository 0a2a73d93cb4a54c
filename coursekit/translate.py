"""Train a Transformer to translate, in one process or several (DistributedDataParallel).

Shape legend: B batch (per process), S source length, T target length, V target vocabulary size.

    python -m coursekit.translate --task en-de-numbers --time-budget 300 --plot cross.png
    torchrun --nproc_per_node=2 -m coursekit.translate --task en-de-numbers --epochs 20

The same command runs in both ways. Under ``torchrun`` (which sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``, ``MASTER_PORT``) every process builds the same task and model, wraps the model in
:class:`~torch.nn.parallel.DistributedDataParallel` (gloo on CPU, NCCL on CUDA), and reads its own shard of
the training data through a :class:`~torch.utils.data.distributed.DistributedSampler`; gradients are averaged
across processes after every backward pass, so the copies stay identical. ``--batch-size`` is per process.

The steps, in order (:func:`run`): start the process group -> build the task -> build the model -> train
(label smoothing, the warm-up schedule) -> on rank 0: exact match and chrF on held-out data, a checkpoint,
a cross-attention plot -> stop the process group.

Book: chapter "The Transformer" (training it to translate).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

from coursekit.data import (
    NUMBER_LANGUAGES,
    Task,
    TranslationDataset,
    Vocab,
    collate_pairs,
    date_task,
    make_loader,
    number_task,
    number_words,
)
from coursekit.decoding import beam_search, greedy_decode
from coursekit.device import get_device
from coursekit.train import History, save_checkpoint, teacher_forced_loss, train
from coursekit.transformer import AttentionMaps, Transformer, TransformerConfig, WarmupInverseSqrtLR


@dataclass(frozen=True)
class TranslateOptions:
    """Everything one training run needs; the command-line flags map one to one (``--d-model`` -> ``d_model``).

    Attributes:
        task: "SRC-TGT-numbers" (languages from :data:`coursekit.data.NUMBER_LANGUAGES`, e.g. "en-de-numbers")
            or "dates". lo, hi: the numbers ``range(lo, hi)`` of a numbers task. dates: pairs of the dates task.
        d_model ... activation: the model (see :class:`coursekit.transformer.TransformerConfig`).
        batch_size: per process. epochs, max_steps, time_budget_s: stop at the first one reached.
        lr_factor, warmup_steps: the schedule (:class:`coursekit.transformer.WarmupInverseSqrtLR`).
        label_smoothing: epsilon_ls. clip_grad_norm: None turns clipping off.
        valid_every: validate (loss, exact match) every this many epochs on rank 0; 0 never.
        eval_split: "test", "valid" or "none": where to measure exact match and chrF at the end.
        beam_size: 1 decodes greedily, more uses beam search.
        checkpoint: path to save the model and vocabularies (rank 0). plot: PNG path for the cross-attention
            of ``example`` (source words; digits are turned into the source language's number words).
    """

    task: str = "en-de-numbers"
    lo: int = 0
    hi: int = 10_000
    dates: int = 20_000
    d_model: int = 128
    nhead: int = 4
    num_layers: int = 2
    dim_feedforward: int = 256
    dropout: float = 0.1
    activation: str = "relu"
    norm_first: bool = False
    batch_size: int = 64
    epochs: int | None = None
    max_steps: int | None = None
    time_budget_s: float | None = None
    lr_factor: float = 1.0
    warmup_steps: int = 400
    label_smoothing: float = 0.1
    clip_grad_norm: float | None = 1.0
    valid_every: int = 1
    eval_split: str = "test"
    beam_size: int = 1
    seed: int = 0
    device: str = "auto"
    checkpoint: str | None = None
    plot: str | None = None
    example: str = "3442"
    progress: bool = False

    def __post_init__(self) -> None:
        if self.epochs is None and self.max_steps is None and self.time_budget_s is None:
            raise ValueError("give a stopping rule: --epochs, --max-steps or --time-budget")
        if self.eval_split not in ("test", "valid", "none"):
            raise ValueError(f"eval_split must be 'test', 'valid' or 'none', got {self.eval_split!r}")
        if self.batch_size < 1 or self.beam_size < 1:
            raise ValueError(f"batch_size and beam_size must be positive, got {self.batch_size}, {self.beam_size}")


class Context(NamedTuple):
    """Where this process runs: its rank among ``world_size`` processes and its device."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


class Result(NamedTuple):
    """What :func:`run` returns: the trained model (unwrapped), its task, the history, and the final metrics
    (rank 0 only; an empty dict on the other ranks)."""

    model: Transformer
    task: Task
    history: History
    metrics: dict[str, float]


# ----- the steps ------------------------------------------------------------------------------------


def start_processes(device: str) -> Context:
    """Join the process group when launched by torchrun (``WORLD_SIZE`` is set), else run alone.

    The backend follows the device: NCCL for CUDA (one GPU per process, ``cuda:LOCAL_RANK``), gloo otherwise.
    """
    if "WORLD_SIZE" not in os.environ:
        return Context(0, 1, get_device(device))
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    resolved = get_device(device)
    if resolved.type == "cuda":
        resolved = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(resolved)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if resolved.type == "cuda" else "gloo", rank=rank, world_size=world_size)
    return Context(rank, world_size, resolved)


def stop_processes(context: Context) -> None:
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def load_task(options: TranslateOptions) -> Task:
    """Build the task named by ``options.task``; every process gets the same splits (they depend on the seed only)."""
    if options.task == "dates":
        return date_task(options.dates, seed=options.seed)
    parts = options.task.split("-")
    if len(parts) == 3 and parts[2] == "numbers" and parts[0] in NUMBER_LANGUAGES and parts[1] in NUMBER_LANGUAGES:
        return number_task(options.lo, options.hi, parts[0], parts[1], seed=options.seed)
    raise ValueError(f"unknown task {options.task!r}: use 'dates' or 'SRC-TGT-numbers' with SRC, TGT in "
                     f"{', '.join(NUMBER_LANGUAGES)} (e.g. 'en-de-numbers')")


def build_model(options: TranslateOptions, task: Task) -> Transformer:
    """A Transformer sized by ``options`` for the task's vocabularies; the seed makes every rank's copy identical."""
    torch.manual_seed(options.seed)
    config = TransformerConfig(
        src_vocab_size=len(task.src_vocab), tgt_vocab_size=len(task.tgt_vocab), d_model=options.d_model,
        nhead=options.nhead, num_encoder_layers=options.num_layers, num_decoder_layers=options.num_layers,
        dim_feedforward=options.dim_feedforward, dropout=options.dropout, activation=options.activation,
        norm_first=options.norm_first, max_len=max(64, _longest(task) + 2), label_smoothing=options.label_smoothing,
        warmup_steps=options.warmup_steps, pad_id=task.src_vocab.pad_id)
    config.check_vocabs(task.src_vocab, task.tgt_vocab)
    return Transformer(config)


def _longest(task: Task) -> int:
    return max(max(len(src), len(tgt)) for split in (task.train, task.valid, task.test) for src, tgt in split)


def train_loader(task: Task, batch_size: int, seed: int, context: Context) -> DataLoader:
    """Shuffled training batches; with several processes each reads its own 1/world_size of every epoch."""
    dataset = TranslationDataset(task.train, task.src_vocab, task.tgt_vocab)
    if context.distributed:
        sampler = DistributedSampler(dataset, num_replicas=context.world_size, rank=context.rank, shuffle=True,
                                     seed=seed)
    else:
        sampler = RandomSampler(dataset, generator=torch.Generator().manual_seed(seed))
    collate = functools.partial(collate_pairs, src_vocab=task.src_vocab, tgt_vocab=task.tgt_vocab)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, collate_fn=collate)


def train_model(model: Transformer, task: Task, options: TranslateOptions, context: Context) -> History:
    """Train with :func:`coursekit.train.train` until the first stopping rule; rank 0 validates every
    ``valid_every`` epochs.

    Every process steps its DistributedDataParallel copy (gradients are averaged in the backward pass) and
    draws its own dropout (seed + rank); the time budget is read on rank 0's clock.
    """
    model.to(context.device)
    wrapped = DistributedDataParallel(model, device_ids=[context.device.index] if context.device.type == "cuda"
                                      else None) if context.distributed else model
    loader = train_loader(task, options.batch_size, options.seed, context)
    validate = context.is_main and options.valid_every > 0
    valid_loader = make_loader(TranslationDataset(task.valid, task.src_vocab, task.tgt_vocab), 256,
                               shuffle=False) if validate else None
    # Section 5.3: Adam with beta2 = 0.98 and eps = 1e-9; the scheduler sets the learning rate itself.
    optimizer = torch.optim.Adam(model.parameters(), lr=1.0, betas=(0.9, 0.98), eps=1e-9)
    scheduler = WarmupInverseSqrtLR(optimizer, model.config.d_model, model.config.warmup_steps, options.lr_factor)
    smoothed = functools.partial(teacher_forced_loss, label_smoothing=model.config.label_smoothing)
    return train(wrapped, loader, epochs=options.epochs, max_steps=options.max_steps,
                 time_budget_s=options.time_budget_s, optimizer=optimizer, scheduler=scheduler,
                 device=context.device, clip_grad_norm=options.clip_grad_norm, valid_loader=valid_loader,
                 valid_every=max(1, options.valid_every), seed=options.seed + context.rank,
                 progress=options.progress and context.is_main, loss_fn=smoothed)


def detokenize(tokens: Sequence[str]) -> str:
    """Tokens as one string for chrF. Spaces do not matter: chrF counts character n-grams without whitespace."""
    return " ".join(tokens)


def chrf(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Corpus chrF (Popović, 2015) from sacrebleu, 0-100: the F-score (beta = 2) of character 1- to 6-grams."""
    try:
        from sacrebleu.metrics import CHRF
    except ImportError as err:  # pragma: no cover - only without the pinned dependency
        raise ImportError("chrF needs sacrebleu: pip install sacrebleu==2.5.1") from err
    return CHRF().corpus_score(list(hypotheses), [list(references)]).score


@torch.no_grad()
def translate(model: Transformer, sources: Sequence[Sequence[str]], src_vocab: Vocab, tgt_vocab: Vocab, *,
              beam_size: int = 1, batch_size: int = 256, device: torch.device | str = "cpu") -> list[list[str]]:
    """Translate token lists with greedy (``beam_size=1``) or beam search, in eval mode."""
    model.eval()
    translations = []
    for i in range(0, len(sources), batch_size):
        chunk = [(list(src), []) for src in sources[i : i + batch_size]]
        batch = collate_pairs(chunk, src_vocab, tgt_vocab).to(device)
        max_len = min(model.config.max_len - 1, 2 * batch.src.size(1) + 10)
        kwargs = dict(start_id=tgt_vocab.start_id, stop_id=tgt_vocab.stop_id, pad_id=tgt_vocab.pad_id, max_len=max_len)
        if beam_size == 1:
            decoded = greedy_decode(model, batch.src, batch.src_key_padding_mask, **kwargs)
        else:
            decoded = beam_search(model, batch.src, batch.src_key_padding_mask, beam_size=beam_size, **kwargs)
        translations.extend(tgt_vocab.decode(row) for row in decoded.tokens)
    return translations


def evaluate_translation(model: Transformer, pairs: Sequence[tuple[list[str], list[str]]], src_vocab: Vocab,
                         tgt_vocab: Vocab, *, beam_size: int = 1,
                         device: torch.device | str = "cpu") -> dict[str, float]:
    """Exact match (the whole output equals the reference) and corpus chrF on held-out pairs."""
    if not pairs:
        raise ValueError("evaluate_translation got no pairs")
    outputs = translate(model, [src for src, _ in pairs], src_vocab, tgt_vocab, beam_size=beam_size, device=device)
    references = [tgt for _, tgt in pairs]
    exact = sum(out == ref for out, ref in zip(outputs, references)) / len(pairs)
    score = chrf([detokenize(o) for o in outputs], [detokenize(r) for r in references])
    return {"exact_match": exact, "chrf": score, "n": float(len(pairs))}


@torch.no_grad()
def translate_with_attention(model: Transformer, source: Sequence[str], src_vocab: Vocab, tgt_vocab: Vocab, *,
                             device: torch.device | str = "cpu") -> tuple[list[str], AttentionMaps]:
    """Translate one source greedily and return the output tokens ([STOP] included) and every attention map.

    The maps come from a teacher-forced pass over ``[START] + output``: row t of each decoder map is the query
    that predicted output token t.

    Shape:
        The maps are :class:`coursekit.transformer.AttentionMaps` with B = 1, S = len(source), T = len(output).
    """
    model.eval()
    batch = collate_pairs([(list(source), [])], src_vocab, tgt_vocab).to(device)
    max_len = min(model.config.max_len - 1, 2 * batch.src.size(1) + 10)
    decoded = greedy_decode(model, batch.src, batch.src_key_padding_mask, start_id=tgt_vocab.start_id,
                            stop_id=tgt_vocab.stop_id, pad_id=tgt_vocab.pad_id, max_len=max_len)
    ids = decoded.tokens[0, : int(decoded.lengths[0])]  # (T,), [STOP] last unless cut off at max_len
    tgt_in = torch.cat([ids.new_tensor([tgt_vocab.start_id]), ids[:-1]])[None]  # (1, T)
    maps = model.attention_maps(batch.src, batch.src_key_padding_mask, tgt_in)
    return tgt_vocab.decode(ids, strip_special=False), maps


def example_source(options: TranslateOptions) -> list[str]:
    """The source tokens of ``options.example``: digits become number words in a numbers task's source language."""
    if options.example.isdigit() and options.task.endswith("-numbers"):
        return number_words(int(options.example), options.task.split("-")[0])
    return options.example.split()


def plot_example(model: Transformer, task: Task, source: list[str], path: str, device: torch.device) -> list[str]:
    """Translate one source and save its cross-attention, every layer and head, to ``path``. Returns the output."""
    import matplotlib.pyplot as plt

    from coursekit.viz import plot_attention_grid

    output_tokens, maps = translate_with_attention(model, source, task.src_vocab, task.tgt_vocab, device=device)
    figure = plot_attention_grid(maps.cross[0], keys=source, queries=output_tokens,
                                 title=f"Cross-attention: {' '.join(source)} -> {' '.join(output_tokens[:-1])}",
                                 xlabel="source token (key)", ylabel="output token (predicted by this query)")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(figure)
    return output_tokens


def run(options: TranslateOptions) -> Result:
    """All the steps of a training run, on this process. Call it the same way on every rank."""
    context = start_processes(options.device)
    try:
        result = _run_steps(options, context)
    except BaseException:
        # No barrier: the other processes may be stuck in a collective; leaving lets torchrun stop them all.
        if dist.is_initialized():
            dist.destroy_process_group()
        raise
    stop_processes(context)
    return result


def _run_steps(options: TranslateOptions, context: Context) -> Result:
    """Task -> model -> training -> (rank 0) held-out metrics, checkpoint, plot."""
    task = load_task(options)
    model = build_model(options, task)
    history = train_model(model, task, options, context)
    metrics: dict[str, float] = {}
    if context.is_main:
        metrics["train_steps"] = float(history.steps[-1] + 1)
        metrics["train_time_s"] = history.epochs[-1]["time_s"]
        if options.eval_split != "none":
            pairs = task.test if options.eval_split == "test" else task.valid
            metrics.update(evaluate_translation(model, pairs, task.src_vocab, task.tgt_vocab,
                                                beam_size=options.beam_size, device=context.device))
        if options.checkpoint:
            save_checkpoint(options.checkpoint, model, src_vocab=task.src_vocab, tgt_vocab=task.tgt_vocab,
                            history=history)
        if options.plot:
            plot_example(model, task, example_source(options), options.plot, context.device)
    return Result(model, task, history, metrics)


# ----- command line ----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    defaults = TranslateOptions(epochs=1)
    parser = argparse.ArgumentParser(prog="python -m coursekit.translate", description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--task", default=defaults.task, help="'SRC-TGT-numbers' (e.g. en-de-numbers) or 'dates'")
    # Not --lo / --hi: torchrun's parser would take a prefix of its own flags (--log-dir, ...) as its own.
    add("--numbers-from", dest="lo", type=int, default=defaults.lo, help="numbers task: first number")
    add("--numbers-to", dest="hi", type=int, default=defaults.hi, help="numbers task: one past the last number")
    add("--dates", type=int, default=defaults.dates, help="dates task: number of pairs")
    add("--d-model", type=int, default=defaults.d_model)
    add("--nhead", type=int, default=defaults.nhead)
    add("--num-layers", type=int, default=defaults.num_layers, help="encoder layers = decoder layers")
    add("--dim-feedforward", type=int, default=defaults.dim_feedforward)
    add("--dropout", type=float, default=defaults.dropout)
    add("--activation", choices=("relu", "gelu"), default=defaults.activation)
    add("--norm-first", action="store_true", help="pre-LN instead of the paper's post-LN")
    add("--batch-size", type=int, default=defaults.batch_size, help="per process")
    add("--epochs", type=int)
    add("--max-steps", type=int)
    add("--time-budget", dest="time_budget_s", type=float, help="seconds of training (wall time, rank 0's clock)")
    add("--lr-factor", type=float, default=defaults.lr_factor)
    add("--warmup-steps", type=int, default=defaults.warmup_steps)
    add("--label-smoothing", type=float, default=defaults.label_smoothing)
    add("--clip-grad-norm", type=float, default=defaults.clip_grad_norm, help="0 turns clipping off")
    add("--valid-every", type=int, default=defaults.valid_every, help="epochs between validations; 0 never")
    add("--eval-split", choices=("test", "valid", "none"), default=defaults.eval_split)
    add("--beam-size", type=int, default=defaults.beam_size)
    add("--seed", type=int, default=defaults.seed)
    add("--device", default=defaults.device, help="auto, cpu, cuda or mps")
    add("--checkpoint", help="where rank 0 saves the model (coursekit.train.load_checkpoint reads it)")
    add("--plot", help="PNG path for the cross-attention of --example")
    add("--example", default=defaults.example, help="source words, or digits for a numbers task")
    add("--progress", action="store_true", help="print a line per epoch")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = vars(build_parser().parse_args(argv))
    if args["clip_grad_norm"] == 0:
        args["clip_grad_norm"] = None
    try:
        options = TranslateOptions(**args)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    result = run(options)
    if result.metrics:
        print(json.dumps({k: round(v, 4) for k, v in result.metrics.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
