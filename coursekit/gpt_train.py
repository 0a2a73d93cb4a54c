"""Training GPT on Shakespeare: characters as tokens, n-gram baselines, perplexity, checkpoints.

Shape legend: B batch, T context length (``block``), V vocabulary size.

- :class:`CharTokenizer`: one token per character, as in Karpathy's char-rnn and nanoGPT's ``shakespeare_char``.
- :func:`random_windows`: B random windows of T + 1 characters; inputs are the first T, targets the last T.
- :func:`ngram_perplexities`: unigram, bigram and trigram models with add-k smoothing, the baselines.
- :func:`perplexity`: :math:`\\exp` of the mean next-token cross-entropy over a whole text.
- :func:`train_gpt`: AdamW, warm-up then cosine decay, in the course's loop (:func:`coursekit.train.train`), and
  checkpoints (:func:`save_checkpoint` / :func:`load_checkpoint`) small enough for the repository.

The course's checkpoint is made by one command (see ``python -m coursekit.gpt_train --help``)::

    python -m coursekit.gpt_train --out book/_data/gpt_shakespeare.pt --threads 1

Book: chapter "GPT".
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.optim.lr_scheduler import LambdaLR

from coursekit.corpora import shakespeare, split_text
from coursekit.device import DeviceLike, autocast, get_device
from coursekit.gpt import GPT, GPTConfig, count_parameters
from coursekit.train import History, evaluating, train


class CharTokenizer:
    """Characters as tokens: the vocabulary is every character of the text, sorted; id = index."""

    def __init__(self, chars: Sequence[str]) -> None:
        if len(set(chars)) != len(chars) or any(len(c) != 1 for c in chars):
            raise ValueError("CharTokenizer needs a sequence of distinct single characters")
        self.chars = list(chars)
        self._ids = {c: i for i, c in enumerate(self.chars)}

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        return cls(sorted(set(text)))

    def __len__(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> list[int]:
        unknown = sorted(set(text) - self._ids.keys())
        if unknown:
            raise ValueError(f"characters {unknown} are not in the vocabulary of {len(self)} characters; "
                             "use only characters of the training text")
        return [self._ids[c] for c in text]

    def decode(self, ids: Sequence[int] | Tensor) -> str:
        return "".join(self.chars[int(i)] for i in ids)

    def __repr__(self) -> str:
        return f"CharTokenizer({len(self)} characters)"


def random_windows(data: Tensor, block: int, batch_size: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """B windows at random offsets: inputs ``data[i : i + T]``, targets ``data[i + 1 : i + T + 1]``.

    Shape: data (N,) -> inputs (B, T), targets (B, T).
    """
    if data.numel() <= block:
        raise ValueError(f"the text has {data.numel()} tokens, too few for windows of block = {block} + 1")
    starts = torch.randint(0, data.numel() - block, (batch_size,), generator=generator)
    rows = starts[:, None] + torch.arange(block + 1)  # (B, T + 1)
    window = data[rows]
    return window[:, :-1], window[:, 1:]


def lm_loss(logits: Tensor, targets: Tensor) -> Tensor:
    r"""Mean next-token cross-entropy :math:`-\frac{1}{BT}\sum \log p(x_{t+1} \mid x_{\le t})`. Shape: (B, T, V), (B, T)."""
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())


@torch.no_grad()
def perplexity(model: GPT, data: Tensor, block: int | None = None, batch_size: int = 32,
               device: DeviceLike = "auto") -> float:
    """exp(mean cross-entropy) of predicting every token of ``data`` from the ones before it.

    The text is cut into consecutive windows of ``block`` tokens (default: the model's context), so each
    token is predicted once; the first token of each window has no context. Eval mode, restored after.
    """
    device = get_device(device)
    block = block or model.config.max_len
    n = (data.numel() - 1) // block
    if n < 1:
        raise ValueError(f"the text has {data.numel()} tokens, fewer than one window of {block} + 1")
    inputs = data[: n * block].view(n, block)  # (N, T)
    targets = data[1 : n * block + 1].view(n, block)  # (N, T)
    total = 0.0
    with evaluating(model):
        for i in range(0, n, batch_size):
            x, y = inputs[i:i + batch_size].to(device), targets[i:i + batch_size].to(device)
            with autocast(device):
                logits = model(x).logits
            total += F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), reduction="sum").item()
    return math.exp(total / (n * block))


def ngram_perplexities(train: Tensor, valid: Tensor, vocab_size: int, orders: Sequence[int] = (1, 2, 3),
                       ks: Sequence[float] = (1.0, 0.1, 0.01, 0.001)) -> dict[str, float]:
    r"""Perplexity on ``valid`` of n-gram models counted on ``train``: the baselines a language model must beat.

    :math:`p(x_t \mid x_{t-n+1..t-1}) = \frac{c(\text{context}, x_t) + k}{c(\text{context}) + kV}` (add-k
    smoothing); each order gets the best k of ``ks`` on ``valid``, so the baselines are as strong as they
    can be. The first n - 1 tokens of ``valid`` are not scored. Returns e.g.
    ``{"unigram": 27.0, "bigram": 12.1, "trigram": 7.9}``.
    """
    names = {1: "unigram", 2: "bigram", 3: "trigram", 4: "4-gram"}
    out = {}
    V = vocab_size
    for n in orders:
        def codes(data: Tensor) -> Tensor:  # each n-gram as one integer, the context in the high digits
            code = torch.zeros(data.numel() - n + 1, dtype=torch.long)
            for j in range(n):
                code = code * V + data[j : data.numel() - n + 1 + j]
            return code
        full = torch.bincount(codes(train), minlength=V ** n).view(-1, V).double()  # (V^(n-1), V)
        context = full.sum(dim=1)  # (V^(n-1),)
        valid_codes = codes(valid)
        ctx, nxt = valid_codes // V, valid_codes % V
        best = min(
            -torch.log((full[ctx, nxt] + k) / (context[ctx] + k * V)).mean().item() for k in ks)
        out[names.get(n, f"{n}-gram")] = math.exp(best)
    return out


def lr_at(step: int, max_steps: int, lr: float, warmup: int) -> float:
    """Linear warm-up to ``lr`` over ``warmup`` steps, then cosine decay to lr / 10 (as nanoGPT)."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, max_steps - warmup))
    return lr / 10 + 0.5 * (lr - lr / 10) * (1 + math.cos(math.pi * progress))


@dataclass(frozen=True)
class TrainSettings:
    """The recipe of a training run (stored in the checkpoint with the results)."""

    steps: int = 3000
    batch_size: int = 32
    block: int = 64
    lr: float = 2e-3
    warmup: int = 100
    weight_decay: float = 0.1
    eval_every: int = 200
    eval_tokens: int = 50_000
    seed: int = 0


def make_optimizer(model: GPT, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW with weight decay on the matrices only (not on biases, layer norms or position tables)."""
    decay = [p for n, p in model.named_parameters() if p.dim() == 2 and n != "pos_emb.weight"]
    rest = [p for n, p in model.named_parameters() if not (p.dim() == 2 and n != "pos_emb.weight")]
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}],
                             lr=lr, betas=(0.9, 0.95))


class Windows(NamedTuple):
    """A batch of ``inputs`` (B, T) and ``targets`` (B, T), the inputs shifted by one."""

    inputs: Tensor
    targets: Tensor

    def to(self, device: torch.device | str) -> Windows:
        return Windows(self.inputs.to(device), self.targets.to(device))


class WindowLoader:
    """``per_pass`` batches of random windows each time it is iterated: one "epoch" of
    :func:`coursekit.train.train` is one interval between validations. Seeded once, so runs repeat."""

    def __init__(self, data: Tensor, block: int, batch_size: int, per_pass: int, seed: int) -> None:
        self.data, self.block, self.batch_size, self.per_pass = data, block, batch_size, per_pass
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return self.per_pass

    def __iter__(self) -> Iterator[Windows]:
        for _ in range(self.per_pass):
            yield Windows(*random_windows(self.data, self.block, self.batch_size, self.generator))


def lm_batch_loss(model: GPT, batch: Windows) -> Tensor:
    """The ``loss_fn`` of :func:`coursekit.train.train_step`: next-token cross-entropy on a batch of windows."""
    return lm_loss(model(batch.inputs).logits, batch.targets)


def evaluate_lm(model: GPT, valid_ids: Tensor, device: DeviceLike = "auto", block: int | None = None) -> dict[str, float]:
    """The ``evaluate_fn`` of :func:`coursekit.train.train`: ``loss`` (nats per token) and ``perplexity``."""
    ppl = perplexity(model, valid_ids, block, device=device)
    return {"loss": math.log(ppl), "perplexity": ppl}


def train_gpt(model: GPT, train_ids: Tensor, valid_ids: Tensor, settings: TrainSettings = TrainSettings(),
              device: DeviceLike = "auto", progress: bool = True) -> History:
    """Train on random windows of ``train_ids`` in the course's loop (:func:`coursekit.train.train`); every
    ``eval_every`` steps measure the perplexity of the first ``eval_tokens`` of ``valid_ids``.

    ``History.epochs`` gets one row per evaluation: ``step``, ``train_loss`` over the interval, ``valid_loss``
    (nats per token), ``perplexity``, ``time_s``.
    """
    device = get_device(device)
    model.to(device)  # before the optimizer is built on its parameters
    optimizer = make_optimizer(model, settings.lr, settings.weight_decay)
    schedule = LambdaLR(optimizer, lambda step: lr_at(step, settings.steps, settings.lr, settings.warmup) / settings.lr)
    loader = WindowLoader(train_ids, settings.block, settings.batch_size, settings.eval_every, settings.seed)
    valid_slice = valid_ids[: settings.eval_tokens + 1]
    return train(model, loader, max_steps=settings.steps, optimizer=optimizer, scheduler=schedule, device=device,
                 valid_loader=valid_slice, seed=settings.seed, progress=progress, loss_fn=lm_batch_loss,
                 evaluate_fn=partial(evaluate_lm, block=settings.block))


def save_checkpoint(path: str | Path, model: GPT, tokenizer: CharTokenizer, history: History,
                    extra: dict[str, Any] | None = None, half: bool = True) -> Path:
    """Write config, weights (fp16 by default: half the size, a change in perplexity below 0.1%), the
    characters, the training history and anything in ``extra`` (recipe, baselines) to one file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: (v.half() if half and v.is_floating_point() else v).cpu()
             for k, v in model.state_dict().items() if k != "lm_head.weight"}  # tied to tok_emb.weight
    torch.save({"config": model.config.to_dict(), "state_dict": state, "chars": tokenizer.chars,
                "history": history.to_dict(), "extra": extra or {}}, path)
    return path


def load_checkpoint(path: str | Path, device: DeviceLike = "cpu") -> tuple[GPT, CharTokenizer, History, dict[str, Any]]:
    """The model (fp32, eval mode), tokenizer, history and extras saved by :func:`save_checkpoint`."""
    data = torch.load(Path(path), map_location="cpu", weights_only=True)
    model = GPT(GPTConfig(**data["config"]))
    state = {k: v.float() if v.is_floating_point() else v for k, v in data["state_dict"].items()}
    state["lm_head.weight"] = state["tok_emb.weight"]
    model.load_state_dict(state, strict=True)
    return (model.to(get_device(device)).eval(), CharTokenizer(data["chars"]), History.from_dict(data["history"]),
            data["extra"])


COURSE_CONFIG = dict(d_model=128, nhead=4, num_layers=4, dim_feedforward=512, dropout=0.0)
"""The book's model: 4 layers of D = 128 (about 0.8M parameters, 1.6 MB in fp16); its context is the
training ``block``."""


def shakespeare_data(valid_fraction: float = 0.1) -> tuple[CharTokenizer, Tensor, Tensor]:
    """The tokenizer (every character of the works) and the train / validation ids (the last works held out)."""
    text = shakespeare()
    tokenizer = CharTokenizer.from_text(text)
    train_text, valid_text = split_text(text, valid_fraction)
    return (tokenizer, torch.tensor(tokenizer.encode(train_text), dtype=torch.long),
            torch.tensor(tokenizer.encode(valid_text), dtype=torch.long))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Train the course's character-level GPT on Shakespeare.")
    parser.add_argument("--out", default="book/_data/gpt_shakespeare.pt", help="checkpoint to write")
    for name, value in vars(TrainSettings()).items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch; 1 is fastest on a busy shared machine")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = TrainSettings(**{k: getattr(args, k) for k in vars(TrainSettings())})
    torch.manual_seed(settings.seed)
    tokenizer, train_ids, valid_ids = shakespeare_data()
    model = GPT(GPTConfig(vocab_size=len(tokenizer), max_len=settings.block, **COURSE_CONFIG))
    print(f"{count_parameters(model):,} parameters; {train_ids.numel():,} training and "
          f"{valid_ids.numel():,} validation characters")
    baselines = ngram_perplexities(train_ids, valid_ids, len(tokenizer))
    history = train_gpt(model, train_ids, valid_ids, settings, device=args.device)
    ppl = perplexity(model, valid_ids, settings.block, device=args.device)
    extra = {"settings": vars(settings), "baselines": baselines, "valid_perplexity": ppl,
             "torch": str(torch.__version__), "train_time_s": history.epochs[-1]["time_s"]}
    path = save_checkpoint(args.out, model.cpu(), tokenizer, history, extra)
    print(f"validation perplexity {ppl:.2f} (baselines {baselines}); wrote {path} "
          f"({path.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
