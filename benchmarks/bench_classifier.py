"""Benchmark: the Transformer classifier's training and inference speed against the obvious alternatives.

1. One training step (forward, cross-entropy, backward, AdamW) of the book's classifier (D=128, 2 pre-LN
   layers, 4 heads) against the same model built on ``torch.nn.TransformerEncoder``, on the same batches of
   real WordNet definitions; the two alternate, median of ``--reps``.
2. Test-set inference (4,353 definitions) of the classifier against the bag-of-words baseline.
3. With ``--minilm N``: the real pretrained all-MiniLM-L6-v2 fine-tuned on the first N training definitions
   (``--minilm-epochs``), its accuracy on the same test split (the upper baseline: what pretraining buys).
4. With ``--checkpoint``: the accuracies recorded by ``python -m coursekit.classifier``.

Run: python benchmarks/bench_classifier.py [--reps 20] [--threads 1] [--minilm 4000] [--checkpoint PATH]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from coursekit.bert.tokenizer import WordPieceTokenizer
from coursekit.classifier import (
    ClassifierConfig,
    TextBatches,
    TransformerClassifier,
    classification_loss,
    predict,
    train_bag_of_words,
)
from coursekit.classifier import COURSE_CONFIG
from coursekit.corpora import wordnet_task
from coursekit.train import train_step


class TorchClassifier(nn.Module):
    """The same architecture on torch.nn's encoder (fast path and all)."""

    def __init__(self, config: ClassifierConfig) -> None:
        super().__init__()
        self.tok_emb = nn.Embedding(config.vocab_size, config.d_model)
        self.pos_emb = nn.Embedding(config.max_len, config.d_model)
        layer = nn.TransformerEncoderLayer(config.d_model, config.nhead, config.dim_feedforward, config.dropout,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, config.num_layers, norm=nn.LayerNorm(config.d_model),
                                             enable_nested_tensor=False)
        self.head = nn.Linear(config.d_model, config.num_classes)

    def forward(self, input_ids, key_padding_mask=None):
        x = self.tok_emb(input_ids) + self.pos_emb(torch.arange(input_ids.size(1)))
        return self.head(self.encoder(x, src_key_padding_mask=key_padding_mask)[:, 0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--minilm", type=int, default=0, help="fine-tune MiniLM on this many examples (0 = skip)")
    parser.add_argument("--minilm-epochs", type=int, default=1)
    parser.add_argument("--skip-speed", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    task = wordnet_task()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    if args.minilm:
        from coursekit.classifier import finetune_minilm

        m = finetune_minilm(task, args.minilm, epochs=args.minilm_epochs, device="cpu")
        print(f"MiniLM fine-tuned on {m['train_examples']} definitions for {m['epochs']} epoch(s), lr {m['lr']}: "
              f"test accuracy {m['accuracy']:.4f} ({m['time_s'] / 60:.1f} min)")
    if args.skip_speed:
        return
    tokenizer = WordPieceTokenizer.train([t for t, _ in task.train], vocab_size=8000)
    train = TextBatches(task.train, tokenizer, COURSE_CONFIG["max_len"])
    test = TextBatches(task.test, tokenizer, COURSE_CONFIG["max_len"])
    config = ClassifierConfig(vocab_size=len(tokenizer), num_classes=len(task.classes), **COURSE_CONFIG)
    torch.manual_seed(0)
    ours, theirs = TransformerClassifier(config), TorchClassifier(config)
    optimizers = {m: torch.optim.AdamW(m.parameters(), lr=1e-3) for m in (ours, theirs)}
    batches = list(train.batches(64, shuffle=True, generator=torch.Generator().manual_seed(0)))[: args.reps + 2]
    times = {ours: [], theirs: []}
    for batch in batches:
        for model in (ours, theirs):
            start = time.perf_counter()
            train_step(model, batch, optimizers[model], loss_fn=classification_loss)
            times[model].append(time.perf_counter() - start)
    t_ours, t_torch = (statistics.median(times[m][2:]) for m in (ours, theirs))
    print(f"training step, batch of 64 definitions: coursekit {t_ours * 1e3:.1f} ms, torch.nn {t_torch * 1e3:.1f} ms "
          f"(coursekit / torch = {t_ours / t_torch:.2f})")
    start = time.perf_counter()
    predict(ours, test, device="cpu")
    t_predict = time.perf_counter() - start
    bow = train_bag_of_words(task.train, len(task.classes), weight_decay=0.0, epochs=1)
    start = time.perf_counter()
    bow.predict([t for t, _ in task.test])
    t_bow = time.perf_counter() - start
    print(f"test-set inference ({len(test)} definitions): Transformer {t_predict:.2f} s, bag of words {t_bow:.2f} s "
          f"(ratio {t_predict / t_bow:.1f})")
    if args.checkpoint:
        from coursekit.classifier import load_classifier

        _, _, _, results = load_classifier(args.checkpoint)
        print(f"\nrecorded test accuracy: Transformer {results['test']['accuracy']:.4f}, bag of words "
              f"{results['bag_of_words']['accuracy']:.4f}, majority {results['majority']:.4f}"
              + (f", MiniLM fine-tuned {results['minilm']['accuracy']:.4f}" if "minilm" in results else ""))


if __name__ == "__main__":
    main()
