"""Checks for the *Transformer classifier* notebook (``solutions/classifier``): token and position embeddings, pooling
the encoder's vectors into one per text ([CLS] or the mean of the real tokens), the classifier's forward pass, and the
trained classifier on WordNet's definitions.

Shape legend: B batch, S sequence length (padded), D model dim, V vocabulary size, K classes.

The embedding and pooling checks use (B, S, D, V) = (3, 7, 10, 23) with 11 positions, lengths 7, 4 and 2 (the first
text has no padding): no two sizes equal. The model check builds the notebook's ``TextClassifier`` (D = 12, 2
heads, K = 5, V = 29) with weights drawn by the check and compares its logits with the same computation done here,
the encoder being :class:`coursekit.transformer_layers.TransformerEncoder` as in the notebook. The trained check
scores every test definition; its verdict depends on the trained model alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from coursekit.grading.core import (CheckFailed, Reference, ShortcutPolicy, build_module, expect_tensor, generator,
                                    invoke, learner_error, register_task, seed_or_fresh, where)
from coursekit.grading.diagnosis import Mutant, Symptom, catalogue, describe, quietly_passes, symptom_failure
from coursekit.masks import padding_mask

_POLICY = ShortcutPolicy(
    (Reference("coursekit.classifier", "coursekit.classifier"),
     Reference("coursekit.positional", "coursekit.positional"),
     Reference("coursekit.bert", "coursekit.bert")),
    {}, instead="nn.Embedding, torch.arange and basic tensor operations",
)
EMBEDDING_TASK = register_task("the classifier's embeddings", _POLICY, code="embedding")
POOLING_TASK = register_task("pooling", _POLICY, code="pooling")
CLASSIFIER_TASK = register_task("the Transformer classifier", _POLICY, code="classifier")

B, S, D, V, MAX_LEN = 3, 7, 10, 23, 11
LENGTHS = (7, 4, 2)


def _fail(code: str, text: str, seed: int | None = None) -> CheckFailed:
    return CheckFailed(f"{text} {where(seed)}" if seed is not None else text, code=code)


# ---------------------------------------------------------------------------------------------------
# Part 1: token and position embeddings
# ---------------------------------------------------------------------------------------------------


def embedding_variant(tok: torch.Tensor, pos: torch.Tensor, input_ids: torch.Tensor, *, kind: str = "right",
                      **_: Any) -> torch.Tensor:
    """``tok[ids] + pos[0..S-1]`` with (at most) one planted mistake; the default gives the reference."""
    n = input_ids.size(1)
    positions = torch.arange(n)
    return {
        "right": lambda: tok[input_ids] + pos[positions],
        "no-positions": lambda: tok[input_ids],
        "positions-from-1": lambda: tok[input_ids] + pos[positions + 1],
        "positions-reversed": lambda: tok[input_ids] + pos[positions.flip(0)],
        "scaled": lambda: tok[input_ids] * math.sqrt(tok.size(1)) + pos[positions],
    }[kind]()


def _embedding_mutant(code: str, says: str, kind: str) -> Mutant:
    return Mutant(code, says, lambda tok, pos, input_ids, **_: embedding_variant(tok, pos, input_ids, kind=kind))


_EMBEDDING_MUTANTS = (
    _embedding_mutant("embedding.no-positions", "Your vectors are the token embeddings alone: add the position "
                      "embedding of each position, self.pos_emb(torch.arange(S)). Without it the encoder cannot tell "
                      "'a tree that grows fruit' from 'fruit that grows on a tree'.", "no-positions"),
    _embedding_mutant("embedding.positions-from-1", "Your positions start at 1: the first token, [START], is "
                      "position 0, torch.arange(S).", "positions-from-1"),
    _embedding_mutant("embedding.positions-reversed", "Your positions count from the end: position 0 is the first "
                      "token, torch.arange(S), not reversed.", "positions-reversed"),
    _embedding_mutant("embedding.scaled", "You multiplied the token embeddings by sqrt(d_model), as the original "
                      "Transformer does; this classifier, like BERT, adds them as they are.", "scaled"),
)


def _embedding_state(seed: int) -> dict[str, torch.Tensor]:
    g = generator(seed + 1)
    return {"tok_emb.weight": torch.randn(V, D, generator=g), "pos_emb.weight": torch.randn(MAX_LEN, D, generator=g)}


def _embedding_probes(seed: int) -> list[dict[str, Any]]:
    """Ids (B, S) = (3, 7) from 1..V-1 (0 is [PAD]), then the same batch cut to S = 5."""
    g = generator(seed)
    state = _embedding_state(seed)
    ids = torch.randint(1, V, (B, S), generator=g)
    return [dict(tok=state["tok_emb.weight"], pos=state["pos_emb.weight"], input_ids=x) for x in (ids, ids[:, :5])]


EMBEDDING = catalogue("classifier.embedding", "embedding", lambda tok, pos, input_ids, **_: embedding_variant(
    tok, pos, input_ids), _EMBEDDING_MUTANTS, _embedding_probes)


def check_embedding(cls: Any, seed: int | None = None) -> None:
    """``ClassifierEmbedding(vocab_size, d_model, max_len)(input_ids)`` = token embedding + position embedding."""
    seed = seed_or_fresh(seed)
    module = build_module(cls, EMBEDDING_TASK, _embedding_state(seed), V, D, MAX_LEN, name="ClassifierEmbedding")
    probes = EMBEDDING.probes(seed)
    outputs = []
    for probe in probes:
        shape = tuple(probe["input_ids"].shape)
        got = invoke(module, EMBEDDING_TASK, (probe["input_ids"],), name="Your ClassifierEmbedding",
                     params=("input_ids",), expect=f"vectors (B, S, D) = {(*shape, D)}", seed=seed)
        outputs.append(expect_tensor(got, "Your ClassifierEmbedding's output", EMBEDDING_TASK))

    def symptom(got, want, probe):
        found = describe(got, want, what="Your vectors", axes=("text", "position", "feature"),
                         sizes={"B": B, "S": probe["input_ids"].size(1), "D": D})
        return Symptom(found.kind, f"For ids of shape {tuple(probe['input_ids'].shape)}: "
                                   f"{found.text[0].lower()}{found.text[1:]}")

    EMBEDDING.judge(outputs, probes, seed=seed, describe=symptom)
    print("✓ token embedding + position embedding")


# ---------------------------------------------------------------------------------------------------
# Part 2: pooling
# ---------------------------------------------------------------------------------------------------


def pool_variant(hidden: torch.Tensor, key_padding_mask: torch.Tensor, how: str, *, kind: str = "right",
                 **_: Any) -> torch.Tensor:
    """One vector per text, the [START]/[CLS] position's or the mean of the real tokens', with (at most) one planted
    mistake; the default gives the reference."""
    real = (~key_padding_mask).unsqueeze(-1).float()  # (B, S, 1)
    if how == "cls" or kind == "always-cls":
        return {"first-text": lambda: hidden[0], "last-position": lambda: hidden[:, -1]}.get(kind, lambda: hidden[:, 0])()
    return {
        "right": lambda: (hidden * real).sum(1) / real.sum(1),
        "mean-with-padding": lambda: hidden.mean(dim=1),
        "divided-by-length": lambda: (hidden * real).sum(1) / hidden.size(1),
        "summed": lambda: (hidden * real).sum(1),
        "mask-inverted": lambda: (hidden * (1 - real)).sum(1) / (1 - real).sum(1),
        "over-batch": lambda: (hidden * real).sum(0) / real.sum(0),
        "first-text": lambda: (hidden * real).sum(1) / real.sum(1),
        "last-position": lambda: (hidden * real).sum(1) / real.sum(1),
    }[kind]()


def _pool_mutant(code: str, says: str, kind: str) -> Mutant:
    return Mutant(code, says, lambda hidden, key_padding_mask, how, **_: pool_variant(hidden, key_padding_mask, how,
                                                                                      kind=kind))


_POOL_MUTANTS = (
    _pool_mutant("pooling.cls-of-first-text", "For 'cls' you took hidden[0], the first TEXT of the batch; the [START] "
                 "token is the first POSITION of every text: hidden[:, 0].", "first-text"),
    _pool_mutant("pooling.cls-from-last-position", "For 'cls' you took the last position, hidden[:, -1], which is "
                 "padding for every text shorter than the batch: the [START] token is first, hidden[:, 0].",
                 "last-position"),
    _pool_mutant("pooling.mean-with-padding", "Your mean includes the padding positions: average over the real "
                 "tokens only, (hidden * real).sum(1) / real.sum(1) with real = ~key_padding_mask.",
                 "mean-with-padding"),
    _pool_mutant("pooling.mean-divided-by-length", "You summed the real tokens but divided by the padded length S: "
                 "divide by each text's number of real tokens, real.sum(1).", "divided-by-length"),
    _pool_mutant("pooling.mean-not-divided", "Your 'mean' is the sum of the real tokens' vectors: divide by their "
                 "number, real.sum(1).", "summed"),
    _pool_mutant("pooling.mean-of-padding", "Your mean averages the PADDING positions (the mask read the wrong way "
                 "round): key_padding_mask is True at padding, so the real tokens are ~key_padding_mask.",
                 "mask-inverted"),
    _pool_mutant("pooling.mean-over-batch", "You averaged over the batch (dim 0): average each text over its "
                 "positions (dim 1).", "over-batch"),
    _pool_mutant("pooling.always-cls", "With how='mean' you returned the [START] vector: average the real tokens "
                 "instead.", "always-cls"),
)


def _pool_probes(seed: int) -> list[dict[str, Any]]:
    """hidden (B, S, D) = (3, 7, 10), lengths 7, 4, 2; 'cls' then 'mean'."""
    g = generator(seed)
    hidden = torch.randn(B, S, D, generator=g)
    mask = padding_mask(torch.tensor(LENGTHS), S)
    return [dict(hidden=hidden, key_padding_mask=mask, how=how) for how in ("cls", "mean")]


POOL = catalogue("classifier.pool", "pooling", lambda hidden, key_padding_mask, how, **_: pool_variant(
    hidden, key_padding_mask, how), _POOL_MUTANTS, _pool_probes)


def check_pooling(fn: Callable, seed: int | None = None) -> None:
    """``pool(hidden, key_padding_mask, how)``: 'cls' gives each text's first vector, 'mean' the mean of its real
    tokens' vectors; (B, S, D) -> (B, D)."""
    seed = seed_or_fresh(seed)
    probes = POOL.probes(seed)
    outputs = []
    for probe in probes:
        got = invoke(fn, POOLING_TASK, (probe["hidden"], probe["key_padding_mask"], probe["how"]), name="Your pool",
                     params=("hidden", "key_padding_mask", "how"), expect=f"(B, D) = {(B, D)}", seed=seed)
        outputs.append(expect_tensor(got, f"pool(..., how={probe['how']!r})", POOLING_TASK))

    def symptom(got, want, probe):
        found = describe(got, want, what="Your pooled vectors", axes=("text", "feature"), sizes={"B": B, "D": D})
        return Symptom(found.kind, f"With how={probe['how']!r} (texts of {', '.join(map(str, LENGTHS))} real tokens "
                                   f"out of S = {S}): {found.text[0].lower()}{found.text[1:]}")

    POOL.judge(outputs, probes, seed=seed, describe=symptom)
    print("✓ 'cls' reads each text's first vector, 'mean' averages its real tokens")


# ---------------------------------------------------------------------------------------------------
# Part 3: the classifier's forward pass
# ---------------------------------------------------------------------------------------------------

MODEL_D, MODEL_H, MODEL_F, MODEL_V, MODEL_K, MODEL_MAX_LEN = 12, 2, 24, 29, 5, 16
MODEL_LENGTHS = (9, 6, 3, 8)


def _encoder() -> nn.Module:
    from coursekit.transformer_layers import TransformerEncoder, TransformerEncoderLayer

    layer = TransformerEncoderLayer(MODEL_D, MODEL_H, MODEL_F, dropout=0.0, activation="gelu", norm_first=True)
    return TransformerEncoder(layer, 1, norm=nn.LayerNorm(MODEL_D))


class _Reference(nn.Module):
    """The notebook's TextClassifier, written here with the same parameter names."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Module()
        self.embed.tok_emb = nn.Embedding(MODEL_V, MODEL_D)
        self.embed.pos_emb = nn.Embedding(MODEL_MAX_LEN, MODEL_D)
        self.encoder = _encoder()
        self.head = nn.Linear(MODEL_D, MODEL_K)


def _model_state(seed: int) -> dict[str, torch.Tensor]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed % 2**63)
        model = _Reference()
        with torch.no_grad():
            for name, p in model.named_parameters():  # layer norms away from 1 and 0, so that each one matters
                p.copy_(torch.randn_like(p) * (0.5 if p.dim() > 1 else 0.3) + (1.0 if "norm" in name and
                                                                                  name.endswith("weight") else 0.0))
    return model.state_dict()


def classifier_variant(model: nn.Module, input_ids: torch.Tensor, key_padding_mask: torch.Tensor, pooling: str, *,
                       kind: str = "right", **_: Any) -> torch.Tensor:
    """The classifier's logits with (at most) one planted mistake; the default gives the reference."""
    with torch.no_grad():
        x = model.embed.tok_emb(input_ids) + model.embed.pos_emb(torch.arange(input_ids.size(1)))  # (B, S, D)
        mask = None if kind == "mask-ignored" else key_padding_mask
        hidden = x if kind == "encoder-skipped" else model.encoder(x, src_key_padding_mask=mask)  # (B, S, D)
        how = "cls" if kind == "pooling-ignored" else pooling
        logits = model.head(pool_variant(hidden, key_padding_mask, how))  # (B, K)
    return logits.softmax(-1) if kind == "softmax" else logits


def _classifier_mutant(code: str, says: str, kind: str) -> Mutant:
    return Mutant(code, says, lambda model, input_ids, key_padding_mask, pooling, **_: classifier_variant(
        model, input_ids, key_padding_mask, pooling, kind=kind))


_CLASSIFIER_MUTANTS = (
    _classifier_mutant("classifier.mask-ignored", "Your encoder never gets the padding mask, so every token also "
                       "attends to the padding: pass key_padding_mask on, self.encoder(x, "
                       "src_key_padding_mask=key_padding_mask).", "mask-ignored"),
    _classifier_mutant("classifier.encoder-skipped", "Your logits come from the embeddings alone: run the encoder "
                       "between the embeddings and the pooling.", "encoder-skipped"),
    _classifier_mutant("classifier.pooling-ignored", "Your forward reads the [START] vector even when self.pooling is "
                       "'mean': pass self.pooling on to pool().", "pooling-ignored"),
    _classifier_mutant("classifier.softmax-output", "Your forward returns probabilities (a softmax of the scores): "
                       "return the logits, self.head(pooled); F.cross_entropy applies the log-softmax itself.",
                       "softmax"),
)


def _classifier_probes(seed: int) -> list[dict[str, Any]]:
    """Ids (B, S) = (4, 9) starting with [START] = 1, padded after lengths 9, 6, 3, 8; pooling 'cls' then 'mean'."""
    g = generator(seed)
    mask = padding_mask(torch.tensor(MODEL_LENGTHS), max(MODEL_LENGTHS))
    ids = torch.randint(4, MODEL_V, mask.shape, generator=g).masked_fill(mask, 0)
    ids[:, 0] = 1
    model = _Reference()
    model.load_state_dict(_model_state(seed))
    return [dict(model=model.eval(), input_ids=ids, key_padding_mask=mask, pooling=how) for how in ("cls", "mean")]


CLASSIFIER = catalogue("classifier.model", "classifier", lambda model, input_ids, key_padding_mask, pooling, **_:
                       classifier_variant(model, input_ids, key_padding_mask, pooling), _CLASSIFIER_MUTANTS,
                       _classifier_probes, atol=1e-4)


def check_classifier(cls: Any, seed: int | None = None, *, embedding: Any = None, pool: Any = None) -> None:
    """``TextClassifier(vocab_size, num_classes, d_model, nhead, dim_feedforward, max_len, pooling)`` with the check's
    weights: the same logits (B, K) as embeddings -> encoder (with the padding mask) -> pool -> head, for 'cls' and
    'mean'. ``embedding`` and ``pool``, the learner's parts 1 and 2, only let a failure say whether their tests pass."""
    seed = seed_or_fresh(seed)
    probes = CLASSIFIER.probes(seed)
    state = _model_state(seed)
    outputs = []
    for probe in probes:
        module = build_module(cls, CLASSIFIER_TASK, state, MODEL_V, MODEL_K, name="TextClassifier", d_model=MODEL_D,
                              nhead=MODEL_H, dim_feedforward=MODEL_F, max_len=MODEL_MAX_LEN, pooling=probe["pooling"])
        got = invoke(module, CLASSIFIER_TASK, (probe["input_ids"], probe["key_padding_mask"]),
                     name="Your TextClassifier", params=("input_ids", "key_padding_mask"),
                     expect=f"logits (B, K) = {(len(MODEL_LENGTHS), MODEL_K)}", seed=seed)
        outputs.append(expect_tensor(got, "Your TextClassifier's output", CLASSIFIER_TASK))

    def parts() -> str:
        said = []
        for name, check, answer in (("Test 1 (embeddings)", check_embedding, embedding), ("Test 2 (pooling)",
                                                                                           check_pooling, pool)):
            if answer is not None:
                said.append(f"{name} {'passes' if quietly_passes(check, answer, seed) else 'fails'}")
        return f"With this seed, {' and '.join(said)}." if said else ""

    def symptom(got, want, probe):
        found = describe(got, want, what="Your logits", axes=("text", "class"),
                         sizes={"B": len(MODEL_LENGTHS), "K": MODEL_K})
        return Symptom(found.kind, f"With pooling={probe['pooling']!r} (texts of {', '.join(map(str, MODEL_LENGTHS))} "
                                   f"real tokens): {found.text[0].lower()}{found.text[1:]}")

    CLASSIFIER.judge(outputs, probes, seed=seed, describe=symptom, then=parts if (embedding or pool) else None)
    print("✓ embeddings -> encoder with the padding mask -> pooling -> class scores, for 'cls' and 'mean'")


# ---------------------------------------------------------------------------------------------------
# Part 4: the trained classifier
# ---------------------------------------------------------------------------------------------------

# Measured on CPU: the notebook's reference solution labels 83% of the 3,780 test definitions right, always answering
# the commonest class 31%; mistakes that break the model land far below (tests/mistakes.py lists them), those that
# still train near the reference (they lose their points in the part they break). 0.7 sits apart from both.
TRAINED_BAR = 0.7


def check_trained_classifier(model: Any, examples: Sequence[tuple[str, int]], encode: Callable,
                             classes: Sequence[str], min_accuracy: float = TRAINED_BAR) -> None:
    """Accuracy of the trained ``model`` on EVERY one of ``examples`` (the test split), encoded by the notebook's
    ``encode``; pass at ``min_accuracy``. No seed: the verdict depends on the trained model alone."""
    right, total, confused = 0, 0, {}
    for start in range(0, len(examples), 512):
        chunk = examples[start:start + 512]
        input_ids, key_padding_mask = encode([text for text, _ in chunk])
        labels = torch.tensor([label for _, label in chunk])
        try:
            invoke(lambda: model.eval(), CLASSIFIER_TASK, name="Your model's eval()")
            logits = invoke(model, CLASSIFIER_TASK, (input_ids, key_padding_mask), name="Your trained model",
                            params=("input_ids", "key_padding_mask"), expect=f"logits (B, K) = "
                                                                               f"{(len(chunk), len(classes))}")
        except CheckFailed as err:  # the learner's model raised: the same sentence, under the trained test's code
            if err.code.endswith(".shortcut"):
                raise
            raise CheckFailed(str(err).split("] ", 1)[-1], code=f"trained.symptom.{err.code.rsplit('.', 1)[-1]}") \
                from None
        if not isinstance(logits, torch.Tensor) or logits.shape != (len(chunk), len(classes)):
            raise _fail("trained.symptom.shape", f"Your trained model must return logits of shape (B, K) = "
                                                 f"{(len(chunk), len(classes))}; it returned "
                                                 f"{tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__}.")
        predicted = logits.argmax(-1)
        right += int((predicted == labels).sum())
        total += len(chunk)
        for truth, guess in zip(labels.tolist(), predicted.tolist()):
            if truth != guess:
                confused[(truth, guess)] = confused.get((truth, guess), 0) + 1
    accuracy = right / total
    if accuracy < min_accuracy:
        common = sorted(confused.items(), key=lambda item: -item[1])[:2]
        mix = "; ".join(f"{n} {classes[t]} definitions read as {classes[g]}" for (t, g), n in common)
        raise symptom_failure("trained", Symptom(
            "low-score", f"Your trained classifier labels {accuracy:.0%} of the {total} test definitions right; it needs "
                         f"{min_accuracy:.0%} (most confused: {mix}). It is built from your parts: if a test above "
                         "fails, fix that first; then make sure the training cell ran to the end."), None)
    print(f"✓ your classifier labels {accuracy:.1%} of the {total} test definitions right")
