"""Checks for the *BERT pretraining* notebook (``solutions/bert``): the 15% / 80-10-10 masking rule, packing a
sentence pair, next-sentence pairs, and the combined pretraining loss (Devlin et al., 2019, section 3.1).

Shape legend: B batch, S sequence length, V vocabulary size.

Masking and pair sampling are random, so their checks draw large samples and test the rule's properties
(specials never chosen, proportions within tolerances several standard deviations wide, labels where they
belong) rather than exact outputs: each property that fails gets its own code, a mistake's name when the property
pins the mistake down (``masking.specials-chosen``), a symptom otherwise (``masking.symptom.values``). Packing a pair
and the loss are deterministic, so they have mutant catalogues like the other notebooks (see
:mod:`coursekit.grading.diagnosis`). The loss is compared with ``F.cross_entropy`` computed here.
"""


from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from coursekit.grading.core import (CheckFailed, Reference, ShortcutPolicy, build_module, expect_tensor, generator,
                                    invoke, register_task, seed_or_fresh, where)
from coursekit.grading.diagnosis import Mutant, Symptom, catalogue, quietly_passes

_POLICY = ShortcutPolicy(
    (Reference("coursekit.bert", "coursekit.bert"),
     Reference("transformers' data collators", "transformers.data.data_collator"),
     Reference("transformers' next-sentence dataset", "transformers.data.datasets.language_modeling")),
    {},
    instead="torch.rand, torch.randint, torch.where, F.cross_entropy and plain Python",
)
MASKING_TASK = register_task("BERT's masking rule", _POLICY, code="masking")
PAIR_TASK = register_task("packing a sentence pair", _POLICY, code="pair")
NSP_TASK = register_task("next-sentence pairs", _POLICY, code="nsp")
LOSS_TASK = register_task("the pretraining loss", _POLICY, code="loss")

PAD, UNK, CLS, SEP, MASK = 0, 1, 2, 3, 4
SPECIAL_IDS = [PAD, UNK, CLS, SEP, MASK]
VOCAB_SIZE = 30  # small, so that a random token drawn from the whole vocabulary often lands on a special one
IGNORE = -100


def _fail(code: str, text: str, seed: int | None = None) -> CheckFailed:
    """A failure whose code a property of the answer established."""
    return CheckFailed(f"{text} {where(seed)}" if seed is not None else text, code=code)


# ---------------------------------------------------------------------------------------------------
# Part 1: masking
# ---------------------------------------------------------------------------------------------------


def _sample_batch(seed: int, B: int = 256, S: int = 128) -> torch.Tensor:
    """(B, S) ids: [CLS] a [SEP] b [SEP] then [PAD], ordinary tokens drawn from 5..V-1."""
    g = generator(seed)
    ids = torch.randint(len(SPECIAL_IDS), VOCAB_SIZE, (B, S), generator=g)
    lengths = torch.randint(S // 2, S + 1, (B,), generator=g)
    cut = torch.randint(3, S // 2 - 2, (B,), generator=g)
    positions = torch.arange(S)[None, :]
    ids = ids.masked_fill(positions == 0, CLS)
    ids = ids.masked_fill(positions == cut[:, None], SEP)
    ids = ids.masked_fill(positions == (lengths - 1)[:, None], SEP)
    return ids.masked_fill(positions >= lengths[:, None], PAD)


def _masked(fn: Callable, ids: torch.Tensor, seed: int, **probability: float) -> tuple[torch.Tensor, torch.Tensor]:
    result = invoke(fn, MASKING_TASK, (ids,), dict(mask_id=MASK, vocab_size=VOCAB_SIZE, special_ids=list(SPECIAL_IDS),
                                                   **probability),
                    name="Your mask_tokens", params=("input_ids",),
                    expect=f"(masked_ids, labels), two long tensors of shape (B, S) = {tuple(ids.shape)}", seed=seed)
    if not (isinstance(result, tuple) and len(result) == 2 and all(isinstance(r, torch.Tensor) for r in result)):
        raise _fail("masking.symptom.return-type", "mask_tokens must return a tuple (masked_ids, labels) of two "
                                                   f"tensors; yours returned a {type(result).__name__}.")
    masked, labels = result
    for name, tensor in (("masked_ids", masked), ("labels", labels)):
        if tensor.shape != ids.shape:
            raise _fail("masking.symptom.shape", f"{name} must have the shape of input_ids, (B, S) = "
                                                 f"{tuple(ids.shape)}; yours has {tuple(tensor.shape)}.")
        if tensor.dtype != torch.long:
            raise _fail("masking.symptom.dtype", f"{name} must hold token ids as torch.long (int64); yours has dtype "
                                                 f"{tensor.dtype}.")
    return masked, labels


def check_masking_choice(fn: Callable, seed: int | None = None) -> None:
    """About 15% of the ordinary tokens are chosen, never a special one; labels hold the original id at the chosen
    positions and -100 everywhere else; tokens not chosen are left as they are; and with mlm_probability=0.3 about
    30% are chosen."""
    seed = seed_or_fresh(seed)
    ids = _sample_batch(seed)
    masked, labels = _masked(fn, ids, seed)
    special = torch.isin(ids, torch.tensor(SPECIAL_IDS))
    chosen = labels != IGNORE
    if not chosen.any():
        raise _fail("masking.no-labels", "None of your labels is a token: every position is -100. The chosen "
                                         "positions' labels hold their original token ids.", seed)
    if (labels == ids).all():
        raise _fail("masking.labels-everywhere", "Your labels keep every token. Set them to -100 at the tokens that "
                                                 "were not chosen, so that the loss ignores those positions "
                                                 "(F.cross_entropy skips -100).", seed)
    if chosen.all():
        filler = labels[labels != ids]
        if bool((filler == filler[0]).all()) and float((labels == filler[0]).float().mean()) > 0.5:
            value = int(filler[0])
            meaning = (" 0 is also [PAD]'s id, a real class the loss would learn to predict everywhere." if value == 0
                       else "")
            raise _fail("masking.wrong-ignore-label", f"Your labels are {value} at the tokens that were not chosen; "
                                                      "the loss skips -100 (F.cross_entropy's ignore_index), so use "
                                                      f"-100 there.{meaning}", seed)
        raise _fail("masking.symptom.values", "None of your labels is -100: every position would count in the loss. "
                                              "Set the labels to -100 at the tokens that were not chosen.", seed)
    if (chosen & special).any():
        kinds = sorted({name for name, i in (("[PAD]", PAD), ("[CLS]", CLS), ("[SEP]", SEP), ("[UNK]", UNK),
                                            ("[MASK]", MASK)) if bool((chosen & (ids == i)).any())})
        raise _fail("masking.specials-chosen", f"Special tokens were masked: you chose {', '.join(kinds)} positions. "
                                               "Choose only among the tokens that are not in special_ids.", seed)
    if not torch.equal(labels[chosen], ids[chosen]):
        if torch.equal(labels[chosen], masked[chosen]):
            raise _fail("masking.labels-from-masked", "Your labels hold the masked input ([MASK] or the replacement); "
                                                      "they must hold the ORIGINAL token ids, which the model learns "
                                                      "to predict.", seed)
        wrong = int((labels[chosen] != ids[chosen]).sum())
        raise _fail("masking.symptom.values", f"At {wrong} of the {int(chosen.sum())} chosen positions your label is "
                                              "not the original token id (input_ids).", seed)
    ordinary = ~special
    rate = float(chosen.sum()) / float(ordinary.sum())
    if abs(rate - 0.12) < 0.01 and bool((masked[chosen] == MASK).all()):
        raise _fail("masking.only-mask-labelled", f"Only the tokens replaced by [MASK] have labels ({rate:.1%} of the "
                                                  "ordinary tokens). The random and unchanged ones are chosen too and "
                                                  "must be predicted: label every chosen token, 15% in all.", seed)
    if not torch.equal(masked[~chosen], ids[~chosen]):
        changed = (masked != ids) & ~chosen
        raise _fail("masking.changes-unlabelled", f"You changed {int(changed.sum())} tokens whose label is -100. Only "
                                                  "the chosen tokens are replaced; the 80/10/10 rule applies to them "
                                                  "alone, and every one of them gets a label.", seed)
    if abs(rate - 0.15) > 0.01:
        raise _fail("masking.symptom.values", f"You chose {rate:.1%} of the ordinary tokens; choose each one with "
                                              f"probability 0.15 (checked on {int(ordinary.sum())} tokens, so the rate "
                                              "should be within 1% of 15%).", seed)
    _, labels_30 = _masked(fn, ids, seed, mlm_probability=0.3)
    rate_30 = float((labels_30 != IGNORE).sum()) / float(ordinary.sum())
    if abs(rate_30 - 0.3) > 0.015:
        raise _fail("masking.ignores-probability", f"With mlm_probability=0.3 you chose {rate_30:.1%} of the ordinary "
                                                   f"tokens (and {rate:.1%} with the default 0.15): choose each token "
                                                   "with probability mlm_probability, not a fixed number.", seed)
    print(f"✓ {rate:.1%} of the ordinary tokens chosen ({rate_30:.1%} with mlm_probability=0.3), no special token, "
          "labels -100 elsewhere")


def check_masking_proportions(fn: Callable, seed: int | None = None) -> None:
    """Of the chosen tokens, about 80% become [MASK], 10% a random ordinary token and 10% stay unchanged."""
    seed = seed_or_fresh(seed)
    ids = _sample_batch(seed)
    masked, labels = _masked(fn, ids, seed)
    chosen = labels != _filler(labels)  # Test 1 judges which label means "not chosen"; this one, what became of them
    n = int(chosen.sum())
    if n < 1000:
        passes = _passes(check_masking_choice, fn, seed)
        raise _fail("masking.symptom.values", f"Only {n} of {ids.numel()} tokens have a label, too few to measure the "
                                              f"80/10/10 rule (Test 1 {'passes' if passes else 'fails'} with this "
                                              "seed).", seed)
    new, old = masked[chosen], ids[chosen]
    to_mask = new == MASK
    unchanged = new == old
    to_random = ~to_mask & ~unchanged
    m, r, u = (float(x.float().mean()) for x in (to_mask, to_random, unchanged))
    random_ids = new[to_random]
    if random_ids.numel() and bool(torch.isin(random_ids, torch.tensor(SPECIAL_IDS)).any()):
        raise _fail("masking.random-specials", "Some of your random replacements are special tokens. Draw them from "
                                               "the ordinary tokens only (ids that are not in special_ids), e.g. "
                                               "torch.randint over the ordinary ids.", seed)
    proportions = f"yours are {m:.1%} [MASK], {r:.1%} random, {u:.1%} unchanged (of {n} chosen tokens)"
    if abs(m - 0.8) > 0.03 or abs(r - 0.1) > 0.025 or abs(u - 0.1) > 0.025:
        if m > 0.97:
            raise _fail("masking.all-mask", f"Every chosen token became [MASK] ({proportions}). Replace only 80% of "
                                            "them; of the other 20%, half get a random token and half stay as they "
                                            "are.", seed)
        if r < 0.005:
            raise _fail("masking.no-random", f"You never put a random token ({proportions}): 10% of the chosen tokens "
                                             "become a random ordinary token.", seed)
        if u < 0.03:
            raise _fail("masking.none-unchanged", f"You never leave a chosen token unchanged ({proportions}): 10% of "
                                                  "the chosen tokens keep their id (and their label).", seed)
        if abs(m - 0.8) <= 0.03 and abs(r - 0.02) < 0.01:
            raise _fail("masking.random-of-rest-0.1", f"Of the 20% not replaced by [MASK], you give a random token to "
                                                      f"one in ten ({proportions}); HALF of them get one: probability "
                                                      "0.5 among those, not 0.1.", seed)
        raise _fail("masking.symptom.values", f"Wrong 80/10/10 proportions: {proportions}. The rule is 80% [MASK], "
                                              "10% random, 10% unchanged.", seed)
    if len(set(random_ids.tolist())) < (VOCAB_SIZE - len(SPECIAL_IDS)) // 2:
        raise _fail("masking.symptom.values", f"Your random replacements use only {len(set(random_ids.tolist()))} "
                                              "different ids; draw each one uniformly from all the ordinary tokens.",
                    seed)
    print(f"✓ of the chosen tokens: {m:.0%} [MASK], {r:.0%} random, {u:.0%} unchanged")


def _filler(labels: torch.Tensor) -> int:
    """The label that marks "not chosen": -100 when it is used, else a value filling most positions (-1, 0 ...)."""
    if bool((labels == IGNORE).any()):
        return IGNORE
    values, counts = labels.flatten().unique(return_counts=True)
    top = int(counts.argmax())
    return int(values[top]) if int(counts[top]) > labels.numel() // 2 else IGNORE


def _passes(check: Callable, fn: Callable, seed: int) -> bool:
    from coursekit.grading.diagnosis import quietly_passes

    return quietly_passes(check, fn, seed)


# ---------------------------------------------------------------------------------------------------
# Part 2: a sentence pair as one input
# ---------------------------------------------------------------------------------------------------


def pack_variant(a_ids: list[int], b_ids: list[int], cls_id: int, sep_id: int, *, kind: str = "right",
                 **_: Any) -> tuple[list[int], list[int]]:
    """``pack_pair`` with (at most) one planted mistake; the default gives the reference."""
    ids = [cls_id, *a_ids, sep_id, *b_ids, sep_id]
    types = [0] * (len(a_ids) + 2) + [1] * (len(b_ids) + 1)
    if kind == "no-final-sep":
        return ids[:-1], types[:-1]
    if kind == "no-cls":
        return ids[1:], types[1:]
    if kind == "no-middle-sep":
        return [cls_id, *a_ids, *b_ids, sep_id], [0] * (len(a_ids) + 1) + [1] * (len(b_ids) + 1)
    if kind == "first-sep-in-b":
        types[len(a_ids) + 1] = 1
    if kind == "last-sep-in-a":
        types[-1] = 0
    if kind == "all-zero":
        types = [0] * len(ids)
    if kind == "segments-1-2":
        types = [t + 1 for t in types]
    if kind == "b-first":
        return [cls_id, *b_ids, sep_id, *a_ids, sep_id], [0] * (len(b_ids) + 2) + [1] * (len(a_ids) + 1)
    return ids, types


def _pack_mutant(code: str, says: str, kind: str) -> Mutant:
    return Mutant(code, says, lambda a_ids, b_ids, cls_id, sep_id, **_: pack_variant(a_ids, b_ids, cls_id, sep_id,
                                                                                     kind=kind))


_PACK_MUTANTS = (
    _pack_mutant("pair.no-final-sep", "Your pair has no [SEP] after the second sentence: [CLS] A [SEP] B [SEP].",
                 "no-final-sep"),
    _pack_mutant("pair.no-cls", "Your pair does not start with [CLS], whose final vector the NSP classifier reads: "
                 "[CLS] A [SEP] B [SEP].", "no-cls"),
    _pack_mutant("pair.no-middle-sep", "Your pair has no [SEP] between the two sentences: [CLS] A [SEP] B [SEP].",
                 "no-middle-sep"),
    _pack_mutant("pair.first-sep-in-b", "The [SEP] that closes A belongs to segment 0: segment ids are 0 for "
                 "[CLS] A [SEP] and 1 for B [SEP].", "first-sep-in-b"),
    _pack_mutant("pair.last-sep-in-a", "The final [SEP] belongs to segment 1, with B: segment ids are 0 for "
                 "[CLS] A [SEP] and 1 for B [SEP].", "last-sep-in-a"),
    _pack_mutant("pair.one-segment", "Your segment ids are all 0: B and its [SEP] are segment 1.", "all-zero"),
    _pack_mutant("pair.segments-1-2", "Your segment ids are 1 and 2; they are 0 (for [CLS] A [SEP]) and 1 (for "
                 "B [SEP]).", "segments-1-2"),
    _pack_mutant("pair.b-first", "Your pair puts B first: [CLS] A [SEP] B [SEP], with A in segment 0.", "b-first"),
)


def _pack_probes(seed: int) -> list[dict[str, Any]]:
    """A of 3 tokens and B of 4, then lengths drawn from 2..9 (never equal), ordinary ids from 5..29."""
    g = generator(seed)
    len_a = 1 + int(torch.randint(1, 9, (), generator=g))
    len_b = 1 + int(torch.randint(1, 8, (), generator=g))
    len_b += len_b >= len_a  # never equal: B first would look right
    probes = []
    for la, lb in ((3, 4), (len_a, len_b)):
        probes.append(dict(a_ids=torch.randint(5, VOCAB_SIZE, (la,), generator=g).tolist(),
                           b_ids=torch.randint(5, VOCAB_SIZE, (lb,), generator=g).tolist(), cls_id=CLS, sep_id=SEP))
    return probes


PACK = catalogue("bert.pack", "pair", lambda a_ids, b_ids, cls_id, sep_id, **_: pack_variant(a_ids, b_ids, cls_id,
                                                                                            sep_id),
                 _PACK_MUTANTS, _pack_probes)


def check_pack_pair(fn: Callable, seed: int | None = None) -> None:
    """``pack_pair(a, b, cls_id, sep_id)`` = ([CLS] a [SEP] b [SEP], segment ids 0 ... 0 1 ... 1)."""
    seed = seed_or_fresh(seed)
    probes = PACK.probes(seed)
    outputs = []
    for probe in probes:
        result = invoke(fn, PAIR_TASK, (probe["a_ids"], probe["b_ids"]), dict(cls_id=CLS, sep_id=SEP),
                        name="Your pack_pair", params=("a_ids", "b_ids"),
                        expect="(input_ids, token_type_ids), two lists", seed=seed)
        if not (isinstance(result, (tuple, list)) and len(result) == 2):
            raise _fail("pair.symptom.return-type", "pack_pair must return a tuple (input_ids, token_type_ids).")
        outputs.append(tuple(torch.as_tensor(x).tolist() if isinstance(x, torch.Tensor) else list(x) for x in result))

    def symptom(got, want, probe):
        a, b = probe["a_ids"], probe["b_ids"]
        if list(got[0]) != want[0]:
            return Symptom("values", f"For A = {a} and B = {b} (with [CLS] = {CLS}, [SEP] = {SEP}), input_ids must be "
                                     f"{want[0]}; yours are {list(got[0])}.")
        return Symptom("values", f"token_type_ids must be 0 for [CLS] A [SEP] and 1 for B [SEP], {want[1]}; yours are "
                                 f"{list(got[1])}.")

    PACK.judge(outputs, probes, seed=seed, describe=symptom)
    print("✓ [CLS] A [SEP] B [SEP] with segment ids 0 ... 0 1 ... 1")


# ---------------------------------------------------------------------------------------------------
# Part 3: next-sentence pairs
# ---------------------------------------------------------------------------------------------------


def _documents(seed: int, n_docs: int = 40) -> list[list[str]]:
    rng = random.Random(seed)
    return [[f"Sentence {j} of document {i}." for j in range(rng.randint(20, 40))] for i in range(n_docs)]


def _pairs(fn: Callable, documents: list[list[str]], seed: int, rng_seed: int) -> list[tuple]:
    pairs = invoke(fn, NSP_TASK, (documents,), {"seed": rng_seed}, name="Your make_nsp_pairs",
                   params=("documents",), expect="a list of (sentence_a, sentence_b, label) tuples", seed=seed)
    if not isinstance(pairs, (list, tuple)) or not all(isinstance(p, (tuple, list)) and len(p) == 3 for p in pairs):
        raise _fail("nsp.symptom.return-type", "make_nsp_pairs must return a list of (sentence_a, sentence_b, label) "
                                               "tuples.")
    return [(a, b, int(label) if isinstance(label, (int, torch.Tensor)) else label) for a, b, label in pairs]


def check_nsp_pairs(fn: Callable, seed: int | None = None) -> None:
    """``make_nsp_pairs(documents, seed)``: one (A, B, label) per sentence that has a successor; label 0 (IsNext):
    B is that successor; label 1 (NotNext): B is a sentence of another document; about half of each; and the same
    seed gives the same pairs, another seed other pairs."""
    seed = seed_or_fresh(seed)
    documents = _documents(seed)
    where_is = {s: (i, j) for i, doc in enumerate(documents) for j, s in enumerate(doc)}
    rng_seed = seed % 2**31
    pairs = _pairs(fn, documents, seed, rng_seed)
    expected = sum(len(d) - 1 for d in documents)
    firsts = [a for a, _, _ in pairs]
    if any(a not in where_is or b not in where_is for a, b, _ in pairs):
        raise _fail("nsp.symptom.values", "Each pair must hold two sentences of the documents, as they are (strings), "
                                          "and a label.", seed)
    if len(pairs) != expected or len(set(firsts)) != expected or any(where_is[a][1] == len(documents[where_is[a][0]]) - 1
                                                                     for a in firsts):
        lasts = sum(where_is[a][1] == len(documents[where_is[a][0]]) - 1 for a in firsts)
        raise _fail("nsp.symptom.values", f"Every sentence that has a next sentence in its document must be an A "
                                          f"exactly once: {expected} pairs for these {len(documents)} documents; you "
                                          f"made {len(pairs)} ({len(set(firsts))} different A's, {lasts} of them the "
                                          "last sentence of their document).", seed)
    labels = {label for _, _, label in pairs}
    if not labels <= {0, 1}:
        raise _fail("nsp.symptom.values", f"Labels are 0 (IsNext) and 1 (NotNext); yours include "
                                          f"{sorted(labels - {0, 1}, key=str)[:3]}.", seed)
    consecutive = [where_is[b] == (where_is[a][0], where_is[a][1] + 1) for a, b, _ in pairs]
    is_next = [label == 0 for _, _, label in pairs]
    if all(c != n for c, n in zip(consecutive, is_next)):
        raise _fail("nsp.labels-inverted", "Your labels are inverted: 0 means IsNext (B follows A) and 1 means "
                                           "NotNext, as in Hugging Face's BertForPreTraining.", seed)
    if not all(c for c, n in zip(consecutive, is_next) if n):
        wrong = sum(1 for c, n in zip(consecutive, is_next) if n and not c)
        raise _fail("nsp.isnext-not-next", f"{wrong} of your pairs labelled 0 (IsNext) do not have as B the sentence "
                                           "right after A in the same document.", seed)
    not_next = [(a, b) for (a, b, _), n in zip(pairs, is_next) if not n]
    if any(where_is[a][0] == where_is[b][0] for a, b in not_next):
        raise _fail("nsp.notnext-same-document", "A NotNext B was taken from A's own document (it may even be the true "
                                                 "next sentence). Draw the document of a random B among the OTHER "
                                                 "documents.", seed)
    share = sum(is_next) / len(pairs)
    if abs(share - 0.5) > 0.07:
        raise _fail("nsp.symptom.values", f"{share:.0%} of your pairs are IsNext; half of them should be (checked on "
                                          f"{len(pairs)} pairs, so the share should be within 7% of 50%).", seed)
    docs_used = len({where_is[b][0] for _, b in not_next})
    sentences_used = len({b for _, b in not_next})
    if docs_used < len(documents) // 2 or sentences_used < len(not_next) // 3:
        raise _fail("nsp.symptom.values", f"Your random B's come from only {docs_used} documents and {sentences_used} "
                                          f"different sentences (for {len(not_next)} NotNext pairs): pick the document "
                                          "at random, then a random sentence in it.", seed)
    again = _pairs(fn, documents, seed, rng_seed)
    if again != pairs:
        differ = sum(x != y for x, y in zip(again, pairs)) + abs(len(again) - len(pairs))
        raise _fail("nsp.not-reproducible", f"Called twice with the same seed ({rng_seed}), your make_nsp_pairs gives "
                                            f"different pairs ({differ} of {len(pairs)} differ): draw every random "
                                            "choice from rng = random.Random(seed), not from the random module itself "
                                            "(or torch), whose state moves on between calls.", seed)
    if _pairs(fn, documents, seed, (rng_seed + 1) % 2**31) == pairs:
        raise _fail("nsp.seed-ignored", f"Seeds {rng_seed} and {(rng_seed + 1) % 2**31} give exactly the same pairs: "
                                        "your make_nsp_pairs does not use its seed. Build rng = random.Random(seed) "
                                        "from it.", seed)
    print(f"✓ {len(pairs)} pairs, {share:.0%} IsNext, random B's from other documents, the same pairs for the same seed")


# ---------------------------------------------------------------------------------------------------
# Part 4: the pretraining loss
# ---------------------------------------------------------------------------------------------------


def loss_variant(mlm_logits: torch.Tensor, mlm_labels: torch.Tensor, nsp_logits: torch.Tensor,
                 nsp_labels: torch.Tensor, targets: torch.Tensor, *, kind: str = "right", **_: Any) -> torch.Tensor:
    """The pretraining loss with (at most) one planted mistake; the default gives the reference."""
    V = mlm_logits.size(-1)
    logits, labels = mlm_logits.reshape(-1, V), mlm_labels.reshape(-1)  # (B*S, V), (B*S,)
    mlm, nsp = F.cross_entropy(logits, labels), F.cross_entropy(nsp_logits, nsp_labels)
    per_token = F.cross_entropy(logits, labels, reduction="none")  # 0 at ignored positions
    chosen = (mlm_labels != IGNORE).float()
    per_sequence = (per_token.view_as(chosen) * chosen).sum(1) / chosen.sum(1)
    return {
        "right": lambda: mlm + nsp,
        "mean": lambda: (mlm + nsp) / 2,
        "no-nsp": lambda: mlm,
        "no-mlm": lambda: nsp,
        "all-positions": lambda: per_token.sum() / labels.numel() + nsp,
        "every-position": lambda: F.cross_entropy(logits, targets.reshape(-1)) + nsp,
        "sum": lambda: per_token.sum() + nsp,
        "softmax": lambda: F.cross_entropy(logits.softmax(-1), labels) + F.cross_entropy(nsp_logits.softmax(-1),
                                                                                          nsp_labels),
        "per-sequence": lambda: per_sequence.mean() + nsp,
        "nsp-bce": lambda: mlm + F.binary_cross_entropy_with_logits(nsp_logits[:, 1], nsp_labels.float()),
        "nsp-labels-flipped": lambda: mlm + F.cross_entropy(nsp_logits, 1 - nsp_labels),
    }[kind]()


def _loss_mutant(code: str, says: str, kind: str) -> Mutant:
    return Mutant(code, says, lambda mlm_logits, mlm_labels, nsp_logits, nsp_labels, targets, **_: loss_variant(
        mlm_logits, mlm_labels, nsp_logits, nsp_labels, targets, kind=kind))


_LOSS_MUTANTS = (
    _loss_mutant("loss.averaged", "You averaged the two losses; BERT's objective is their sum, mlm_loss + nsp_loss.",
                 "mean"),
    _loss_mutant("loss.no-nsp", "Your loss leaves out next sentence prediction: add "
                 "F.cross_entropy(nsp_logits, nsp_labels).", "no-nsp"),
    _loss_mutant("loss.no-mlm", "Your loss leaves out the masked language model: add the cross-entropy over the chosen "
                 "positions.", "no-mlm"),
    _loss_mutant("loss.mlm-over-all-positions", "You averaged the MLM loss over all B*S positions; average over the "
                 "chosen ones only (labels != -100), as F.cross_entropy does when it skips -100.", "all-positions"),
    _loss_mutant("loss.every-position-scored", "Your MLM loss scores every position, chosen or not, against the "
                 "original tokens; the labels' -100 marks the positions to skip.", "every-position"),
    _loss_mutant("loss.mlm-summed", "You summed the MLM cross-entropy over the chosen positions; average it "
                 "(reduction='mean').", "sum"),
    _loss_mutant("loss.softmax-first", "You applied a softmax before F.cross_entropy, which applies log-softmax "
                 "itself: pass the raw logits.", "softmax"),
    _loss_mutant("loss.mlm-mean-per-sequence", "You averaged the MLM loss within each sequence, then over the "
                 "sequences; BERT averages over all the chosen tokens of the batch at once, so that a sequence with "
                 "more of them weighs more: F.cross_entropy on the flattened (B*S, V) logits.", "per-sequence"),
    _loss_mutant("loss.nsp-binary", "Your NSP loss is a binary cross-entropy on one logit; the NSP head gives two "
                 "logits per pair, (B, 2): F.cross_entropy(nsp_logits, nsp_labels).", "nsp-bce"),
    _loss_mutant("loss.nsp-labels-flipped", "Your NSP loss scores the opposite labels (1 - nsp_labels): label 0 is "
                 "IsNext, and F.cross_entropy(nsp_logits, nsp_labels) takes the labels as they are.",
                 "nsp-labels-flipped"),
)


def _loss_probes(seed: int) -> list[dict[str, Any]]:
    """(B, S, V) = (4, 10, 17); 1, 3, 4 and 6 chosen positions (at random places) in the four sequences, so that
    every sequence has some and no two the same number; NSP labels 0, 1, 1, 0."""
    g = generator(seed)
    B, S, V = 4, 10, 17
    mlm_logits, nsp_logits = torch.randn(B, S, V, generator=g), torch.randn(B, 2, generator=g)
    targets = torch.randint(0, V, (B, S), generator=g)
    chosen = torch.zeros(B, S, dtype=torch.bool)
    for b, count in enumerate((1, 3, 4, 6)):
        chosen[b, torch.randperm(S, generator=g)[:count]] = True
    return [dict(mlm_logits=mlm_logits, mlm_labels=targets.masked_fill(~chosen, IGNORE), nsp_logits=nsp_logits,
                 nsp_labels=torch.tensor([0, 1, 1, 0]), targets=targets)]


LOSS = catalogue("bert.loss", "loss", lambda mlm_logits, mlm_labels, nsp_logits, nsp_labels, targets, **_: loss_variant(
    mlm_logits, mlm_labels, nsp_logits, nsp_labels, targets), _LOSS_MUTANTS, _loss_probes)


def check_pretraining_loss(fn: Callable, seed: int | None = None) -> None:
    """Mean cross-entropy over the masked positions (labels != -100) plus mean cross-entropy of the NSP logits."""
    seed = seed_or_fresh(seed)
    probe = LOSS.probes(seed)[0]
    got = invoke(fn, LOSS_TASK, (probe["mlm_logits"], probe["mlm_labels"], probe["nsp_logits"], probe["nsp_labels"]),
                 name="Your pretraining_loss", params=("mlm_logits", "mlm_labels", "nsp_logits", "nsp_labels"),
                 expect="one number, a 0-dim tensor", seed=seed)
    got = expect_tensor(got, "pretraining_loss(...)", LOSS_TASK)
    if got.numel() != 1:
        raise _fail("loss.symptom.shape", f"The loss must be a single number (a 0-dim tensor); yours has shape "
                                          f"{tuple(got.shape)}.", seed)
    got = got.reshape(())
    LOSS.judge([got], [probe], seed=seed, describe=lambda g, w, p: Symptom(
        "nan" if bool(g.isnan()) else "inf" if bool(g.isinf()) else "values",
        f"Your loss is {'NaN' if bool(g.isnan()) else f'{float(g):.4f}'}; mean MLM cross-entropy over the chosen "
        f"positions plus mean NSP cross-entropy is {float(w):.4f}."))
    print("✓ the pretraining loss: masked-LM cross-entropy over the chosen positions plus NSP cross-entropy")


# ---------------------------------------------------------------------------------------------------
# Part 5: one pretraining step (the combined MLM + NSP update)
# ---------------------------------------------------------------------------------------------------

# The step runs the course's BERT (coursekit.bert.model) built in the learner's process by the notebook's tiny_bert:
# only the course's own training code, and the model's own loss, are off limits.
STEP_TASK = register_task("the pretraining step", ShortcutPolicy(
    (Reference("coursekit.train.train_step", "coursekit.train"),
     Reference("coursekit.bert.training", "coursekit.bert.training"),
     Reference("coursekit.bert's compute_loss", "coursekit.bert.model", ("BertForPreTraining.compute_loss",))),
    {}, instead="your pretraining_loss, loss.backward(), clip_grad_norm_ and the optimizer you are given"),
    code="step")

STEP_V, STEP_LR, STEP_CLIP = 23, 0.1, 1.0


def _step_model(state: dict[str, torch.Tensor] | None = None) -> Any:
    """The notebook's tiny_bert (2 layers of width 32, no dropout), with ``state`` if given."""
    from coursekit.bert import BertConfig, BertForPreTraining

    model = BertForPreTraining(BertConfig.tiny(vocab_size=STEP_V, d_model=32, dim_feedforward=64, dropout=0.0))
    if state is not None:
        model.load_state_dict(state)
    return model


def step_variant(state: dict[str, torch.Tensor], batches: list[dict[str, torch.Tensor]], *, kind: str = "right",
                 **_: Any) -> tuple[float, float, dict[str, torch.Tensor]]:
    """Two pretraining steps from ``state`` with SGD, with (at most) one planted mistake; the default gives the
    reference. Returns the two losses and the parameters after them."""
    model = _step_model(state).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=STEP_LR)
    losses = []
    with torch.enable_grad():  # catalogues run their mutants under no_grad
        for batch in batches:
            losses.append(_one_step(model, optimizer, batch, kind))
    state_after = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return losses[0], losses[1], state_after


def _one_step(model: Any, optimizer: Any, batch: dict[str, torch.Tensor], kind: str) -> float:
    """One SGD step of ``step_variant``: zero_grad, loss, backward, clip, step (or one of the mistakes)."""
    if kind != "no-zero-grad":
        optimizer.zero_grad()
    mlm_logits, nsp_logits = model(batch["input_ids"], batch["token_type_ids"], batch["key_padding_mask"])
    loss = loss_variant(mlm_logits, batch["mlm_labels"], nsp_logits, batch["nsp_labels"], batch["mlm_labels"])
    loss.backward()
    if kind == "no-update":
        optimizer.zero_grad()
    if kind != "no-clip":
        torch.nn.utils.clip_grad_norm_(model.parameters(), STEP_CLIP)
    optimizer.step()
    return loss.item()


def _step_mutant(code: str, says: str, kind: str) -> Mutant:
    return Mutant(code, says, lambda state, batches, **_: step_variant(state, batches, kind=kind))


_STEP_MUTANTS = (
    _step_mutant("step.no-zero-grad", "Your second update also carries the first batch's gradients: PyTorch adds "
                 "every backward() to .grad, so call optimizer.zero_grad() at the start of each step.",
                 "no-zero-grad"),
    _step_mutant("step.no-update", "Your parameters never change: the order is zero_grad(), the loss, backward(), "
                 "then optimizer.step(); a zero_grad() between backward() and step(), or a step() before backward(), "
                 "updates nothing.", "no-update"),
    _step_mutant("step.not-clipped", "Your update is the gradient step without clipping: BERT clips the gradients' "
                 "global norm to 1, torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0), between backward() and "
                 "optimizer.step() (after the step it changes nothing).", "no-clip"),
)


def _step_batch(g: torch.Generator, B: int, S: int) -> dict[str, torch.Tensor]:
    """[CLS] A [SEP] B [SEP] pairs of random ordinary tokens, padded, about a third of them masked for the MLM."""
    lengths = torch.randint(S // 2, S + 1, (B,), generator=g)
    lengths[0] = S
    positions = torch.arange(S)[None, :]
    padding = positions >= lengths[:, None]  # (B, S)
    ids = torch.randint(len(SPECIAL_IDS), STEP_V, (B, S), generator=g)
    cut = lengths // 2
    ids = ids.masked_fill(positions == 0, CLS).masked_fill(positions == cut[:, None], SEP)
    ids = ids.masked_fill(positions == (lengths - 1)[:, None], SEP).masked_fill(padding, PAD)
    types = (positions > cut[:, None]).long().masked_fill(padding, 0)
    chosen = (torch.rand(B, S, generator=g) < 0.35) & ~torch.isin(ids, torch.tensor(SPECIAL_IDS))
    chosen[:, 1] = True  # every pair has a masked token
    labels = ids.masked_fill(~chosen, IGNORE)
    return {"input_ids": ids.masked_fill(chosen, MASK), "token_type_ids": types, "key_padding_mask": padding,
            "mlm_labels": labels, "nsp_labels": torch.randint(0, 2, (B,), generator=g)}


def _step_probes(seed: int) -> list[dict[str, Any]]:
    """Weights of the notebook's tiny BERT scaled up so that the gradients' norm is well above the clipping norm
    (redrawn until it is at least 2), then batches of (B, S) = (5, 11) and (6, 8)."""
    g = generator(seed)
    while True:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(0, 2**31, (), generator=g)))
            model = _step_model()
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(3.0)
        batches = [_step_batch(g, 5, 11), _step_batch(g, 6, 8)]
        mlm_logits, nsp_logits = model(batches[0]["input_ids"], batches[0]["token_type_ids"],
                                       batches[0]["key_padding_mask"])
        loss_variant(mlm_logits, batches[0]["mlm_labels"], nsp_logits, batches[0]["nsp_labels"],
                     batches[0]["mlm_labels"]).backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), float("inf"))
        if float(norm) >= 2.0:
            state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            return [dict(state=state, batches=batches)]


STEP = catalogue("bert.step", "step", lambda state, batches, **_: step_variant(state, batches), _STEP_MUTANTS,
                 _step_probes)


def check_pretraining_step(fn: Callable, make_model: Callable, make_optimizer: Callable, seed: int | None = None,
                           *, loss: Callable | None = None) -> None:
    """``pretraining_step(model, optimizer, batch)`` twice, on a model built by the notebook's ``tiny_bert`` with the
    check's weights and an SGD optimizer from its ``sgd``: the same losses, returned as floats, and the same parameters
    after both steps as zero_grad -> MLM + NSP loss -> backward -> clip to norm 1 -> step. ``loss``, the learner's
    Part 4, only lets a failure say whether Test 5 passes."""
    seed = seed_or_fresh(seed)
    probes = STEP.probes(seed)
    probe = probes[0]
    model = build_module(make_model, STEP_TASK, probe["state"], STEP_V, name="tiny_bert model")
    optimizer = invoke(make_optimizer, STEP_TASK, (model, STEP_LR), name="Building the optimizer with sgd",
                       params=("model", "lr"))
    losses = []
    for i, batch in enumerate(probe["batches"]):
        got = invoke(fn, STEP_TASK, (model, optimizer, batch), name="Your pretraining_step",
                     params=("model", "optimizer", "batch"), expect="the loss, a Python float", seed=seed)
        if isinstance(got, torch.Tensor) and got.numel() == 1:
            raise _fail("step.returns-tensor", "Your pretraining_step returns the loss as a tensor: return "
                                               "loss.item(), a Python float, so that the training loop does not keep "
                                               "every step's graph alive.", seed)
        if not isinstance(got, (int, float)) or isinstance(got, bool):
            raise _fail("step.symptom.return-type", f"pretraining_step must return the loss as a Python float; yours "
                                                    f"returned {type(got).__name__}.", seed)
        losses.append(float(got))
    state = invoke(lambda: model.state_dict(), STEP_TASK, name="Reading your model's parameters")
    outputs = [(losses[0], losses[1], dict(state))]

    def symptom(got, want, probe):
        if not math.isclose(got[0], want[0], rel_tol=1e-4, abs_tol=1e-4):
            return Symptom("values", f"On the first batch your step returns the loss {got[0]:.4f}; the MLM + NSP "
                                     f"loss of these weights is {want[0]:.4f}.")
        changed = [k for k in want[2] if not torch.allclose(got[2][k].float(), want[2][k], atol=1e-4, rtol=1e-4)]
        return Symptom("values", f"Your first loss is right, but after two steps {len(changed)} of the "
                                 f"{len(want[2])} parameter tensors differ from zero_grad -> loss -> backward -> "
                                 f"clip_grad_norm_(..., 1.0) -> step (for example {', '.join(changed[:3])}).")

    def loss_test() -> str:
        if loss is None:
            return ""
        passes = quietly_passes(check_pretraining_loss, loss, seed)
        return f"(Test 5, the loss, {'passes' if passes else 'fails'} with this seed.)"

    STEP.judge(outputs, probes, seed=seed, describe=symptom, then=loss_test if loss is not None else None)
    print("✓ one pretraining step: zero_grad, MLM + NSP loss, backward, clip to norm 1, step")
