"""The course's arc on one task: the baseline and stages 1-4 trained with one budget, measured, compared.

Shape legend: B batch, S source length (N in the book's cost tables), T target length (M), V vocabulary size.

The task (:func:`arc_task`): English numbers spelled out, read one character at a time, written back as
digits, ``"seven hundred twelve"`` -> ``"712"``. Sources run from 3 to about 70 characters while targets
stay at most 6 digits, so what grows is what the encoder must hold: the baseline's bottleneck shows as the
input gets longer.

- :data:`RUNS`: what is trained, by key: ``"baseline"``, ``"stage1"`` ... ``"stage4"``, and stage 3 again with
  learned positions and with none (``"stage3-learned"``, ``"stage3-none"``).
- :data:`BUDGET`: the same for every run: the same batches in the same order, the same number of steps, the same
  optimizer and learning rate, through the one training loop, :func:`coursekit.train.train`.
- :func:`run_arc`: trains the runs it is asked for (or loads them from ``directory``, where an earlier call left
  them), scores each by input length, and returns :class:`RunResult` s.
- :func:`measure_timings`: the seconds of one training step against sequence length and of one decoder step
  against source length, for every stage, measured side by side in one process (and cached the same way).
- :func:`arc_table`: the numbers as rows of a table; :func:`coursekit.viz.plot_arc` draws them.

Every chapter of the arc reads the same cached run, so the book computes it once:
``run_arc(["baseline", "stage1"], directory="../_build/arc")``.

Book: chapter "Attention Mechanisms and Transformers" (the introduction: the whole picture) and each
stage's chapter (that stage against the one before).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from coursekit.data import (Seq2SeqBatch, Task, TranslationDataset, Vocab, collate_pairs, make_loader,
                            make_number_pairs, split_pairs)
from coursekit.decoding import greedy_decode
from coursekit.device import DeviceLike, get_device
from coursekit.encoder_decoder import EncoderDecoder
from coursekit.masks import padding_mask
from coursekit.seq2seq import (
    AttentionOnlyConfig,
    AttentionOnlyEncoderDecoder,
    BahdanauConfig,
    BahdanauEncoderDecoder,
    RNNConfig,
    RNNEncoderDecoder,
    SelfAttentiveRNNConfig,
    SelfAttentiveRNNEncoderDecoder,
)
from coursekit.train import History, evaluate, load_checkpoint, save_checkpoint, sequences_equal, train, train_step
from coursekit.transformer import Transformer, TransformerConfig

_VERSION = 1  # bump when a change to this module should invalidate every cached run

# --------------------------------------------------------------------------------------------------
# The task
# --------------------------------------------------------------------------------------------------

LENGTH_BANDS = ((1, 15), (16, 30), (31, 45), (46, 60), (61, 75))
"""Source lengths in characters, both ends included, by which exact match is reported."""


def arc_task(per_digit_count: int = 2000, seed: int = 0) -> Task:
    """English numbers spelled out, character by character, to their digits:
    ``"forty two"`` -> ``4 2``.

    ``per_digit_count`` numbers with 1 digit, as many with 2, ... up to 6 digits, drawn with
    ``seed``, split 80/5/15 into train, valid and test with no number in two splits.
    """
    rng = random.Random(seed)
    numbers = [rng.randrange(10 ** (d - 1) if d > 1 else 0, 10**d)
               for d in range(1, 7) for _ in range(per_digit_count)]
    pairs = [(list(" ".join(words)), digits)  # (characters of the words, digits)
             for words, digits in make_number_pairs(numbers, "en", "digits")]
    train_pairs, valid_pairs, test_pairs = split_pairs(pairs, fractions=(0.8, 0.05, 0.15),
                                                       seed=seed)
    src_vocab = Vocab.build(src for src, _ in train_pairs)
    tgt_vocab = Vocab.build(tgt for _, tgt in train_pairs)
    return Task(train_pairs, valid_pairs, test_pairs, src_vocab, tgt_vocab)


def band_of(length: int) -> str:
    """The :data:`LENGTH_BANDS` label of a source length, e.g. ``"16-30"``."""
    for low, high in LENGTH_BANDS:
        if low <= length <= high:
            return f"{low}-{high}"
    raise ValueError(f"a source of {length} characters is outside every band of LENGTH_BANDS {LENGTH_BANDS}")


# --------------------------------------------------------------------------------------------------
# The models and the budget
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Budget:
    """What every run of the arc gets: the same batches of the training split, in the same
    order (``seed``), for ``steps`` updates of Adam at ``lr``, ramped up linearly over
    ``warmup_steps``, gradients clipped at 1."""

    steps: int = 400
    batch_size: int = 64
    lr: float = 3e-3
    warmup_steps: int = 50
    seed: int = 0


BUDGET = Budget()

RNN_SIZES = dict(embed_dim=32, hidden_dim=64)
ATTENTION_SIZES = dict(d_model=64, nhead=4, dim_feedforward=128, dropout=0.0, max_len=256)


@dataclass(frozen=True)
class Run:
    """One model of the arc, as the book names it.

    Attributes:
        key: ``"stage3-none"``, the name of its files and of its row in tables.
        stage: ``"baseline"``, ``"stage1"`` ... ``"stage4"``.
        label: ``"Stage 3: attention without RNN (no positions)"``.
        short: for legends, ``"3: no RNN, no positions"``.
        chapter: the book's chapter about it.
        build: ``(src_vocab_size, tgt_vocab_size) -> model``.
    """

    key: str
    stage: str
    label: str
    short: str
    chapter: str
    build: Callable[[int, int], EncoderDecoder]

    def config(self, src_vocab_size: int, tgt_vocab_size: int) -> dict[str, Any]:
        return dataclasses.asdict(self.build(src_vocab_size, tgt_vocab_size).config)


def _stage3(positions: str) -> Callable[[int, int], EncoderDecoder]:
    def build(src_v: int, tgt_v: int) -> EncoderDecoder:
        return AttentionOnlyEncoderDecoder(AttentionOnlyConfig(src_v, tgt_v, num_layers=1, positions=positions,
                                                               **ATTENTION_SIZES))
    return build


def _stage4(src_v: int, tgt_v: int) -> EncoderDecoder:
    sizes = {k: v for k, v in ATTENTION_SIZES.items()}
    return Transformer(TransformerConfig(src_v, tgt_v, num_encoder_layers=2, num_decoder_layers=2, **sizes))


RUNS: dict[str, Run] = {run.key: run for run in (
    Run("baseline", "baseline", "Baseline: RNN encoder-decoder", "baseline: RNN", "seq2seq_rnn",
        lambda s, t: RNNEncoderDecoder(RNNConfig(s, t, **RNN_SIZES))),
    Run("stage1", "stage1", "Stage 1: RNN + attention", "1: RNN + attention", "bahdanau_attention",
        lambda s, t: BahdanauEncoderDecoder(BahdanauConfig(s, t, attention_dim=64, **RNN_SIZES))),
    Run("stage2", "stage2", "Stage 2: RNN + self-attention", "2: RNN + self-attention", "self_attention",
        lambda s, t: SelfAttentiveRNNEncoderDecoder(SelfAttentiveRNNConfig(s, t, num_heads=4, **RNN_SIZES))),
    Run("stage3", "stage3", "Stage 3: attention without RNN", "3: no RNN", "attention_without_rnn",
        _stage3("sinusoidal")),
    Run("stage3-learned", "stage3", "Stage 3: attention without RNN (learned positions)",
        "3: no RNN, learned positions", "attention_without_rnn", _stage3("learned")),
    Run("stage3-none", "stage3", "Stage 3: attention without RNN (no positions)", "3: no RNN, no positions",
        "attention_without_rnn", _stage3("none")),
    Run("stage4", "stage4", "Stage 4: the Transformer", "4: Transformer", "transformer", _stage4),
)}
"""Every run of the arc by key, in the arc's order."""

STAGE_KEYS = ("baseline", "stage1", "stage2", "stage3", "stage4")
"""The five models of the arc, one per stage (stage 3 with sinusoidal positions)."""


def build_model(key: str, task: Task, seed: int = 0) -> EncoderDecoder:
    """The model of run ``key`` for ``task``'s vocabularies, initialised from ``seed``."""
    run = _run(key)
    torch.manual_seed(seed)
    return run.build(len(task.src_vocab), len(task.tgt_vocab))


def _run(key: str) -> Run:
    if key not in RUNS:
        raise ValueError(f"no run {key!r} in the arc; choose from {', '.join(RUNS)}")
    return RUNS[key]


def count_parameters(model: torch.nn.Module) -> int:
    """Trainable numbers in the model (a tied weight counted once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# --------------------------------------------------------------------------------------------------
# Training and scoring
# --------------------------------------------------------------------------------------------------


@dataclass
class RunResult:
    """One trained run of the arc and what it scored.

    Attributes:
        key, label: as in :data:`RUNS`.
        model: the trained model, in eval mode, on the CPU.
        history: the training loss per step.
        parameters: :func:`count_parameters`.
        train_seconds, train_cpu_seconds: the wall-clock and CPU time of training (the CPU time counts every
            thread of the process; with one thread, and nothing else running, the two agree).
        epochs: passes over the training split the budget amounts to.
        bands: ``{"16-30": (right, count)}``: test numbers decoded exactly right, by source length.
        threads: torch's thread count during training.
    """

    key: str
    label: str
    model: EncoderDecoder
    history: History
    parameters: int
    train_seconds: float
    train_cpu_seconds: float
    epochs: float
    bands: dict[str, tuple[int, int]]
    threads: int

    @property
    def exact_match(self) -> float:
        """Share of the whole test split decoded exactly right."""
        right = sum(r for r, _ in self.bands.values())
        return right / sum(n for _, n in self.bands.values())

    def band_exact_match(self) -> dict[str, float]:
        return {band: right / count for band, (right, count) in self.bands.items() if count}

    @property
    def seconds_per_epoch(self) -> float:
        return self.train_seconds / self.epochs

    @property
    def cpu_seconds_per_epoch(self) -> float:
        return self.train_cpu_seconds / self.epochs


def _warmup(optimizer: torch.optim.Optimizer, steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / steps))


def train_run(key: str, task: Task, budget: Budget = BUDGET, *, progress: bool = False) -> RunResult:
    """Build run ``key``'s model, train it on ``task`` with ``budget`` through :func:`coursekit.train.train` on the
    CPU (validating on the valid split after every epoch), and score it on the test split by input length.

    The times count training only: validation is timed on its own and left out.
    """
    model = build_model(key, task, seed=budget.seed)
    loader = make_loader(TranslationDataset(task.train, task.src_vocab, task.tgt_vocab),
                         batch_size=budget.batch_size, shuffle=True, seed=budget.seed)
    valid = make_loader(TranslationDataset(task.valid, task.src_vocab, task.tgt_vocab), batch_size=512,
                        shuffle=False)
    optimizer = torch.optim.Adam(model.parameters(), lr=budget.lr)
    validating = [0.0, 0.0]  # wall and CPU seconds spent in validation

    def timed_evaluate(model: EncoderDecoder, loader: Iterable, *, device: str) -> dict[str, float]:
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            return evaluate(model, loader, device=device)
        finally:
            validating[0] += time.perf_counter() - wall
            validating[1] += time.process_time() - cpu

    wall, cpu = time.perf_counter(), time.process_time()
    history = train(model, loader, max_steps=budget.steps, optimizer=optimizer,
                    scheduler=_warmup(optimizer, budget.warmup_steps), device="cpu", seed=budget.seed,
                    valid_loader=valid, evaluate_fn=timed_evaluate, progress=progress)
    wall = time.perf_counter() - wall - validating[0]
    cpu = time.process_time() - cpu - validating[1]
    model.eval()
    return RunResult(key, _run(key).label, model, history, count_parameters(model), wall, cpu,
                     budget.steps / len(loader), exact_match_by_band(model, task), torch.get_num_threads())


def decode_exactly(model: EncoderDecoder, pairs: Sequence[tuple[list[str], list[str]]], src_vocab: Vocab,
                   tgt_vocab: Vocab, batch_size: int = 512) -> list[bool]:
    """Greedy-decode each pair's source; True where the output is the target exactly ([STOP] included)."""
    right: list[bool] = []
    with torch.no_grad():
        for start in range(0, len(pairs), batch_size):
            batch = collate_pairs(pairs[start:start + batch_size], src_vocab, tgt_vocab)
            decoded = greedy_decode(model, batch.src, batch.src_key_padding_mask, start_id=tgt_vocab.start_id,
                                    stop_id=tgt_vocab.stop_id, max_len=batch.tgt_out.size(1) + 2,
                                    pad_id=tgt_vocab.pad_id)
            right += sequences_equal(decoded.tokens, batch.tgt_out, pad_id=tgt_vocab.pad_id).tolist()
    return right


def exact_match_by_band(model: EncoderDecoder, task: Task) -> dict[str, tuple[int, int]]:
    """``{band: (right, count)}`` over the test split, by source length (:data:`LENGTH_BANDS`)."""
    model.eval()
    right = decode_exactly(model, task.test, task.src_vocab, task.tgt_vocab)
    bands = {f"{low}-{high}": [0, 0] for low, high in LENGTH_BANDS}
    for (src, _), ok in zip(task.test, right):
        counts = bands[band_of(len(src))]
        counts[0] += int(ok)
        counts[1] += 1
    return {band: (r, n) for band, (r, n) in bands.items()}


# --------------------------------------------------------------------------------------------------
# The cache: each run computed once, then read back by every chapter
# --------------------------------------------------------------------------------------------------


def _fingerprint(key: str, task: Task, budget: Budget) -> str:
    """Changes whenever the run would train differently: its config, the budget, the task, this module's version."""
    spec = {"version": _VERSION, "budget": dataclasses.asdict(budget),
            "config": _run(key).config(len(task.src_vocab), len(task.tgt_vocab)),
            "task": [len(task.train), len(task.valid), len(task.test), task.src_vocab.tokens, task.tgt_vocab.tokens]}
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _save(directory: Path, result: RunResult, task: Task, fingerprint: str) -> None:
    save_checkpoint(directory / f"{result.key}.pt", result.model, src_vocab=task.src_vocab,
                    tgt_vocab=task.tgt_vocab, history=result.history)
    facts = {"fingerprint": fingerprint, "parameters": result.parameters, "train_seconds": result.train_seconds,
             "train_cpu_seconds": result.train_cpu_seconds, "epochs": result.epochs,
             "bands": {band: list(v) for band, v in result.bands.items()}, "threads": result.threads}
    _write_json(directory / f"{result.key}.json", facts)


def _load(directory: Path, key: str, fingerprint: str) -> RunResult | None:
    facts = _read_json(directory / f"{key}.json")
    checkpoint = directory / f"{key}.pt"
    if facts is None or facts.get("fingerprint") != fingerprint or not checkpoint.exists():
        return None
    model_class = type(RUNS[key].build(8, 8))
    saved = load_checkpoint(checkpoint, model_class)
    return RunResult(key, RUNS[key].label, saved.model.eval(), saved.history, facts["parameters"],
                     facts["train_seconds"], facts["train_cpu_seconds"], facts["epochs"],
                     {band: tuple(v) for band, v in facts["bands"].items()}, facts["threads"])


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(data, indent=1))
    os.replace(partial, path)  # never half a file, even if the build is interrupted


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def run_arc(keys: Iterable[str] = STAGE_KEYS, *, directory: str | Path | None = None, task: Task | None = None,
            budget: Budget = BUDGET, progress: bool = False) -> dict[str, RunResult]:
    """The runs ``keys`` of the arc, trained with ``budget``, in the order asked.

    Args:
        keys: any of :data:`RUNS`; the five stages by default.
        directory: where trained runs are kept (a checkpoint and a JSON file each). A run found there, trained
            with the same config, task and budget, is loaded instead of trained again; a new one is saved there.
            None trains every run afresh and keeps nothing.
        task: :func:`arc_task` by default.
        budget: :data:`BUDGET` by default.
        progress: show each training's progress bar.
    """
    task = task if task is not None else arc_task()
    results = {}
    for key in keys:
        fingerprint = _fingerprint(key, task, budget)
        found = _load(Path(directory), key, fingerprint) if directory is not None else None
        if found is None:
            found = train_run(key, task, budget, progress=progress)
            if directory is not None:
                _save(Path(directory), found, task, fingerprint)
        results[key] = found
    return results


# --------------------------------------------------------------------------------------------------
# Timings: what one step costs as the sequences grow
# --------------------------------------------------------------------------------------------------

STEP_LENGTHS = (16, 64, 256)
"""Sequence lengths n (source and target alike) at which one training step is timed."""
SOURCE_LENGTHS = (16, 64, 256)
"""Source lengths N at which one decoder step is timed."""


@dataclass
class Timings:
    """Seconds per step, ``{run key: {length: seconds}}``, the best of a few repeats (the least disturbed by
    anything else running). ``cpu`` holds the CPU seconds of the same steps.

    Attributes:
        training_step: one :func:`coursekit.train.train_step` (forward, backward, update) on a batch of
            ``batch_size`` sequences with S = T = n.
        decoder_step: one ``decode_step`` (inference, no gradients) after encoding a source of N tokens,
            averaged over ``decoder_steps`` steps.
        threads: torch's thread count while timing.
    """

    training_step: dict[str, dict[int, float]]
    training_step_cpu: dict[str, dict[int, float]]
    decoder_step: dict[str, dict[int, float]]
    decoder_step_cpu: dict[str, dict[int, float]]
    batch_size: int
    decoder_steps: int
    threads: int


def _random_batch(n_src: int, n_tgt: int, batch_size: int, src_v: int, tgt_v: int, seed: int) -> Seq2SeqBatch:
    """A batch of random ids in which every position is real: S = ``n_src``, T = ``n_tgt``."""
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(4, src_v, (batch_size, n_src), generator=g)
    tgt = torch.randint(4, tgt_v, (batch_size, n_tgt + 1), generator=g)
    tgt[:, 0] = 1  # [START]
    return Seq2SeqBatch(src, torch.full((batch_size,), n_src), padding_mask(torch.full((batch_size,), n_src)),
                        tgt[:, :-1], tgt[:, 1:], padding_mask(torch.full((batch_size,), n_tgt)))


def measure_timings(keys: Sequence[str] = STAGE_KEYS, *, directory: str | Path | None = None,
                    step_lengths: Sequence[int] = STEP_LENGTHS, source_lengths: Sequence[int] = SOURCE_LENGTHS,
                    batch_size: int = 16, decoder_steps: int = 6, repeats: int = 3,
                    device: DeviceLike = "cpu") -> Timings:
    """Time one training step against n and one decoder step against N, for each run.

    The models are untrained (the weights do not change the arithmetic) and get random ids from vocabularies of the
    arc task's sizes. Runs are timed in turn at each length, so a burst of other work on the machine slows them
    alike. With ``directory``, timings measured there before with the same settings are read back instead. The book
    times on the CPU; ``benchmarks/bench_arc.py`` also on a GPU, where a step that has no chain of sequential
    operations runs its positions in parallel.
    """
    device = get_device(device)
    settings = {"version": _VERSION, "keys": list(keys), "step_lengths": list(step_lengths),
                "source_lengths": list(source_lengths), "batch_size": batch_size, "decoder_steps": decoder_steps,
                "repeats": repeats, "configs": {k: _run(k).config(*_VOCAB_SIZES) for k in keys},
                "device": device.type}
    fingerprint = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]
    path = Path(directory) / "timings.json" if directory is not None else None
    saved = _read_json(path) if path is not None else None
    if saved is not None and saved.get("fingerprint") == fingerprint:
        return _timings_from_json(saved)
    sizes_only = _sizes_only(*_VOCAB_SIZES)
    models = {key: build_model(key, sizes_only).to(device) for key in keys}
    found: dict[str, dict[str, dict[int, float]]] = {name: {k: {} for k in keys} for name in
                                                     ("train", "train_cpu", "decode", "decode_cpu")}
    for n in step_lengths:
        for i, (key, model) in enumerate(models.items()):
            batch = _random_batch(n, n, batch_size, *_VOCAB_SIZES, seed=i).to(device)
            optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # a real update that changes nothing
            model.train()
            step = lambda: train_step(model, batch, optimizer, device=device)  # noqa: E731
            found["train"][key][n], found["train_cpu"][key][n] = _best_of(step, repeats, device)
    for n in source_lengths:
        for i, (key, model) in enumerate(models.items()):
            batch = _random_batch(n, 1, 2 * batch_size, *_VOCAB_SIZES, seed=i).to(device)
            found["decode"][key][n], found["decode_cpu"][key][n] = _decoder_step(model, batch, decoder_steps,
                                                                                 repeats, device)
    timings = Timings(found["train"], found["train_cpu"], found["decode"], found["decode_cpu"], batch_size,
                      decoder_steps, torch.get_num_threads())
    if path is not None:
        _write_json(path, {"fingerprint": fingerprint, **dataclasses.asdict(timings)})
    return timings


_VOCAB_SIZES = (23, 14)  # the arc task's: 18 letters and a space, 10 digits, and the 4 special tokens each


def _timings_from_json(saved: dict[str, Any]) -> Timings:
    def lengths(table: dict[str, dict[str, float]]) -> dict[str, dict[int, float]]:
        return {key: {int(n): s for n, s in row.items()} for key, row in table.items()}

    return Timings(lengths(saved["training_step"]), lengths(saved["training_step_cpu"]),
                   lengths(saved["decoder_step"]), lengths(saved["decoder_step_cpu"]), saved["batch_size"],
                   saved["decoder_steps"], saved["threads"])


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # GPU work is queued: wait for it before reading the clock


def _best_of(fn: Callable[[], Any], repeats: int, device: torch.device) -> tuple[float, float]:
    """(wall, cpu) seconds of the fastest of ``repeats`` calls, after one call to warm up."""
    fn()
    best = (float("inf"), float("inf"))
    for _ in range(repeats):
        _synchronize(device)
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        _synchronize(device)
        best = min(best, (time.perf_counter() - wall, time.process_time() - cpu))
    return best


def _decoder_step(model: EncoderDecoder, batch: Any, steps: int, repeats: int,
                  device: torch.device) -> tuple[float, float]:
    """(wall, cpu) seconds per decoder step: the best of ``repeats`` runs of ``steps`` steps, each after encoding
    the source (not timed), after one run to warm up."""
    model.eval()
    best = (float("inf"), float("inf"))
    with torch.no_grad():
        for attempt in range(repeats + 1):
            state = model.encode(batch.src, batch.src_key_padding_mask)
            token = batch.tgt_in[:, 0]
            _synchronize(device)
            wall, cpu = time.perf_counter(), time.process_time()
            for _ in range(steps):
                logits, state, _ = model.decode_step(token, state)
                token = logits.argmax(-1)
            _synchronize(device)
            elapsed = ((time.perf_counter() - wall) / steps, (time.process_time() - cpu) / steps)
            if attempt:
                best = min(best, elapsed)
    return best


def _sizes_only(src_v: int, tgt_v: int) -> Task:
    """A task with no pairs whose vocabularies have the given sizes: enough to build a model."""
    return Task([], [], [], Vocab(f"s{i}" for i in range(src_v - 4)), Vocab(f"t{i}" for i in range(tgt_v - 4)))


# --------------------------------------------------------------------------------------------------
# Tables: the numbers the book shows
# --------------------------------------------------------------------------------------------------


def arc_rows(results: dict[str, RunResult], timings: Timings | None = None) -> list[dict[str, Any]]:
    """One plain row per run, in the order of ``results``, for :func:`coursekit.viz.plot_arc` and the tables.

    ``step_seconds`` is the CPU time of one training step (one thread: the arithmetic, not how busy the machine
    was), ``{}`` for a run that was not timed.
    """
    rows = []
    for key, result in results.items():
        run = _run(key)
        rows.append({
            "key": key, "label": run.label, "short": run.short, "parameters": result.parameters,
            "exact_match": result.exact_match, "exact_by_band": result.band_exact_match(),
            "final_loss": sum(result.history.loss[-20:]) / len(result.history.loss[-20:]),
            "band_counts": {band: n for band, (_, n) in result.bands.items()},
            "seconds_per_epoch": result.seconds_per_epoch, "cpu_seconds_per_epoch": result.cpu_seconds_per_epoch,
            "step_seconds": dict(timings.training_step_cpu.get(key, {})) if timings else {},
            "decoder_step_seconds": dict(timings.decoder_step_cpu.get(key, {})) if timings else {},
        })
    return rows


def accuracy_table(rows: Sequence[dict[str, Any]]) -> str:
    """A Markdown table: exact match on the test split, overall and by input length (the number of test inputs
    in each band in brackets), and the training loss at the end of the budget (the mean of the last 20 steps)."""
    bands = list(rows[0]["exact_by_band"])
    counts = rows[0]["band_counts"]
    head = ("| model | all | " + " | ".join(f"{b} chars ({counts[b]})" for b in bands)
            + " | training loss at the end |")
    lines = [head, "|---|" + "---:|" * (len(bands) + 2)]
    for row in rows:
        cells = [f"{row['exact_match']:.1%}"] + [f"{row['exact_by_band'][b]:.1%}" for b in bands]
        cells.append(f"{row['final_loss']:.3f}")
        lines.append(f"| {row['label']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cost_table(rows: Sequence[dict[str, Any]]) -> str:
    """A Markdown table: parameters, seconds per epoch, and milliseconds per training step at each timed length."""
    lengths = sorted({n for row in rows for n in row["step_seconds"]})
    head = ("| model | parameters | s / epoch (wall) | s / epoch (CPU) | "
            + " | ".join(f"ms / step, n = {n}" for n in lengths) + " |")
    lines = [head, "|---|" + "---:|" * (3 + len(lengths))]
    for row in rows:
        steps = [f"{1000 * row['step_seconds'][n]:.0f}" if n in row["step_seconds"] else "" for n in lengths]
        lines.append(f"| {row['label']} | {row['parameters']:,} | {row['seconds_per_epoch']:.1f} | "
                     f"{row['cpu_seconds_per_epoch']:.1f} | " + " | ".join(steps) + " |")
    return "\n".join(lines)
