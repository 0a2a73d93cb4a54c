"""Checks for the *BERT pretraining* notebook (``solutions/bert``): the 15% / 80-10-10 masking rule, packing a
sentence pair, next-sentence pairs, and the combined pretraining loss (Devlin et al., 2019, section 3.1).

Shape legend: B batch, S sequence length, V vocabulary size.

Masking and pair sampling are random, so their checks draw large samples and test the rule's properties
(specials never chosen, proportions within tolerances several standard deviations wide, labels where they
belong) rather than exact outputs. The loss is compared with ``F.cross_entropy`` computed here.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import torch
import torch.nn.functional as F

from coursekit.grading.core import (CheckFailed, Reference, ShortcutPolicy, call, close, expect_tensor, first_line,
                                    generator, max_gap, register_task, seed_or_fresh, where)

_POLICY = ShortcutPolicy(
    (Reference("coursekit.bert", "coursekit.bert"),
     Reference("transformers' data collators", "transformers.data.data_collator"),
     Reference("transformers' next-sentence dataset", "transformers.data.datasets.language_modeling")),
    {},
    instead="torch.rand, torch.randint, torch.where, F.cross_entropy and plain Python",
)
MASKING_TASK = register_task("BERT's masking rule", _POLICY)
PAIR_TASK = register_task("packing a sentence pair", _POLICY)
NSP_TASK = register_task("next-sentence pairs", _POLICY)
LOSS_TASK = register_task("the pretraining loss", _POLICY)

PAD, UNK, CLS, SEP, MASK = 0, 1, 2, 3, 4
SPECIAL_IDS = [PAD, UNK, CLS, SEP, MASK]
VOCAB_SIZE = 30  # small, so that a random token drawn from the whole vocabulary often lands on a special one
IGNORE = -100


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


def _masked(fn: Callable, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    result = call(fn, MASKING_TASK, ids, mask_id=MASK, vocab_size=VOCAB_SIZE, special_ids=list(SPECIAL_IDS))
    if not (isinstance(result, tuple) and len(result) == 2 and all(isinstance(r, torch.Tensor) for r in result)):
        raise CheckFailed("mask_tokens must return a tuple (masked_ids, labels) of two tensors.")
    masked, labels = result
    for name, tensor in (("masked_ids", masked), ("labels", labels)):
        if tensor.shape != ids.shape:
            raise CheckFailed(f"{name} must have the shape of input_ids, (B, S) = {tuple(ids.shape)}; yours has "
                              f"{tuple(tensor.shape)}.")
        if tensor.dtype != torch.long:
            raise CheckFailed(f"{name} must hold token ids as torch.long (int64); yours has dtype {tensor.dtype}.")
    return masked, labels


def check_masking_choice(fn: Callable, seed: int | None = None) -> None:
    """About 15% of the ordinary tokens are chosen, never a special one; labels hold the original id at the chosen
    positions and -100 everywhere else; tokens not chosen are left as they are."""
    seed = seed_or_fresh(seed)
    ids = _sample_batch(seed)
    masked, labels = _masked(fn, ids)
    special = torch.isin(ids, torch.tensor(SPECIAL_IDS))
    chosen = labels != IGNORE
    if not chosen.any():
        raise CheckFailed("None of your labels is a token: every position is -100. The chosen positions' labels hold "
                          "their original token ids.")
    if chosen.all() or (labels == ids).all():
        raise CheckFailed("Your labels keep every token. Set them to -100 at the tokens that were not chosen, so that "
                          "the loss ignores those positions (F.cross_entropy skips -100).")
    if (chosen & special).any():
        kinds = sorted({name for name, i in (("[PAD]", PAD), ("[CLS]", CLS), ("[SEP]", SEP), ("[UNK]", UNK),
                                            ("[MASK]", MASK)) if bool((chosen & (ids == i)).any())})
        raise CheckFailed(f"Special tokens were masked: you chose {', '.join(kinds)} positions. Choose only among the "
                          "tokens that are not in special_ids.")
    if not torch.equal(labels[chosen], ids[chosen]):
        if torch.equal(labels[chosen], masked[chosen]):
            raise CheckFailed("Your labels hold the masked input ([MASK] or the replacement); they must hold the "
                              "ORIGINAL token ids, which the model learns to predict.")
        raise CheckFailed("At the chosen positions your labels must hold the original token ids (input_ids).")
    ordinary = ~special
    rate = float(chosen.sum()) / float(ordinary.sum())
    if abs(rate - 0.12) < 0.01 and bool((masked[chosen] == MASK).all()):
        raise CheckFailed(f"Only the tokens replaced by [MASK] have labels ({rate:.1%} of the ordinary tokens). "
                          "The random and unchanged ones are chosen too and must be predicted: label every chosen "
                          "token, 15% in all.")
    if not torch.equal(masked[~chosen], ids[~chosen]):
        changed = (masked != ids) & ~chosen
        raise CheckFailed(f"You changed {int(changed.sum())} tokens whose label is -100. Only the chosen tokens are "
                          "replaced; the 80/10/10 rule applies to them alone, and every one of them gets a label.")
    if abs(rate - 0.15) > 0.01:
        raise CheckFailed(f"You chose {rate:.1%} of the ordinary tokens; choose each one with probability 0.15 "
                          f"(checked on {int(ordinary.sum())} tokens, so the rate should be within 1% of 15%).")
    print(f"✓ {rate:.1%} of the ordinary tokens chosen, no special token, labels -100 elsewhere")


def check_masking_proportions(fn: Callable, seed: int | None = None) -> None:
    """Of the chosen tokens, about 80% become [MASK], 10% a random ordinary token and 10% stay unchanged."""
    seed = seed_or_fresh(seed)
    ids = _sample_batch(seed)
    masked, labels = _masked(fn, ids)
    chosen = labels != IGNORE
    n = int(chosen.sum())
    if n < 1000:
        raise CheckFailed(f"Only {n} of {ids.numel()} tokens were chosen; pass Test 1 first.")
    new, old = masked[chosen], ids[chosen]
    to_mask = new == MASK
    unchanged = new == old
    to_random = ~to_mask & ~unchanged
    m, r, u = (float(x.float().mean()) for x in (to_mask, to_random, unchanged))
    random_ids = new[to_random]
    if random_ids.numel() and bool(torch.isin(random_ids, torch.tensor(SPECIAL_IDS)).any()):
        raise CheckFailed("Some of your random replacements are special tokens. Draw them from the ordinary tokens "
                          "only (ids that are not in special_ids), e.g. torch.randint over the ordinary ids.")
    proportions = f"yours are {m:.1%} [MASK], {r:.1%} random, {u:.1%} unchanged (of {n} chosen tokens)"
    if abs(m - 0.8) > 0.03 or abs(r - 0.1) > 0.025 or abs(u - 0.1) > 0.025:
        if m > 0.97:
            hint = ("Every chosen token became [MASK]. Replace only 80% of them; of the other 20%, half get a random "
                    "token and half stay as they are.")
        elif r < 0.005:
            hint = "You never put a random token: 10% of the chosen tokens become a random ordinary token."
        elif u < 0.03:
            hint = "You never leave a chosen token unchanged: 10% of the chosen tokens keep their id (and their label)."
        elif abs(m - 0.8) <= 0.03 and abs(r - 0.02) < 0.01:
            hint = ("Of the 20% not replaced by [MASK], HALF get a random token: probability 0.5 among those, "
                    "not 0.1.")
        else:
            hint = "The rule is 80% [MASK], 10% random, 10% unchanged."
        raise CheckFailed(f"Wrong 80/10/10 proportions: {proportions}. {hint}")
    if len(set(random_ids.tolist())) < (VOCAB_SIZE - len(SPECIAL_IDS)) // 2:
        raise CheckFailed(f"Your random replacements use only {len(set(random_ids.tolist()))} different ids; draw each "
                          "one uniformly from all the ordinary tokens.")
    print(f"✓ of the chosen tokens: {m:.0%} [MASK], {r:.0%} random, {u:.0%} unchanged")


# ---------------------------------------------------------------------------------------------------
# Part 2: a sentence pair as one input
# ---------------------------------------------------------------------------------------------------


def check_pack_pair(fn: Callable, seed: int | None = None) -> None:
    """``pack_pair(a, b, cls_id, sep_id)`` = ([CLS] a [SEP] b [SEP], segment ids 0 ... 0 1 ... 1)."""
    seed = seed_or_fresh(seed)
    g = generator(seed)
    for len_a, len_b in ((3, 4), (1 + int(torch.randint(1, 9, (), generator=g)), 1 + int(torch.randint(1, 9, (), generator=g)))):
        a = torch.randint(5, VOCAB_SIZE, (len_a,), generator=g).tolist()
        b = torch.randint(5, VOCAB_SIZE, (len_b,), generator=g).tolist()
        result = call(fn, PAIR_TASK, a, b, cls_id=CLS, sep_id=SEP)
        if not (isinstance(result, tuple) and len(result) == 2):
            raise CheckFailed("pack_pair must return a tuple (input_ids, token_type_ids).")
        ids, types = (torch.as_tensor(x).tolist() for x in result)
        want_ids = [CLS, *a, SEP, *b, SEP]
        want_types = [0] * (len_a + 2) + [1] * (len_b + 1)
        if ids != want_ids:
            if ids == [CLS, *a, SEP, *b]:
                raise CheckFailed("Your pair has no [SEP] after the second sentence: [CLS] A [SEP] B [SEP].")
            if ids == [*a, SEP, *b, SEP]:
                raise CheckFailed("Your pair does not start with [CLS], whose final vector the NSP classifier reads.")
            raise CheckFailed(f"For A = {a} and B = {b} (with [CLS] = {CLS}, [SEP] = {SEP}), input_ids must be "
                              f"{want_ids}; yours are {ids}.")
        if types != want_types:
            if len(types) == len(want_types) and types[len_a + 1] == 1 and types[:len_a + 1] == want_types[:len_a + 1]:
                raise CheckFailed("The [SEP] that closes A belongs to segment 0: segment ids are 0 for [CLS] A [SEP] "
                                  "and 1 for B [SEP].")
            if len(types) == len(want_types) and types[-1] == 0 and types[:-1] == want_types[:-1]:
                raise CheckFailed("The final [SEP] belongs to segment 1, with B: segment ids are 0 for [CLS] A [SEP] "
                                  "and 1 for B [SEP].")
            raise CheckFailed(f"token_type_ids must be 0 for [CLS] A [SEP] and 1 for B [SEP], {want_types}; yours are "
                              f"{types}.")
    print("✓ [CLS] A [SEP] B [SEP] with segment ids 0 ... 0 1 ... 1")


# ---------------------------------------------------------------------------------------------------
# Part 3: next-sentence pairs
# ---------------------------------------------------------------------------------------------------


def _documents(seed: int, n_docs: int = 40) -> list[list[str]]:
    rng = random.Random(seed)
    return [[f"Sentence {j} of document {i}." for j in range(rng.randint(20, 40))] for i in range(n_docs)]


def check_nsp_pairs(fn: Callable, seed: int | None = None) -> None:
    """``make_nsp_pairs(documents, seed)``: one (A, B, label) per sentence that has a successor; label 0 (IsNext):
    B is that successor; label 1 (NotNext): B is a sentence of another document; about half of each."""
    seed = seed_or_fresh(seed)
    documents = _documents(seed)
    where_is = {s: (i, j) for i, doc in enumerate(documents) for j, s in enumerate(doc)}
    try:
        pairs = call(fn, NSP_TASK, documents, seed=seed % 2**31)
    except NotImplementedError:
        raise
    except (TypeError, ValueError, IndexError) as err:
        raise CheckFailed(f"make_nsp_pairs(documents, seed) raised {type(err).__name__}: {first_line(err)}") from None
    if not isinstance(pairs, (list, tuple)) or not all(isinstance(p, (tuple, list)) and len(p) == 3 for p in pairs):
        raise CheckFailed("make_nsp_pairs must return a list of (sentence_a, sentence_b, label) tuples.")
    pairs = [(a, b, int(label) if isinstance(label, (int, torch.Tensor)) else label) for a, b, label in pairs]
    expected = sum(len(d) - 1 for d in documents)
    firsts = [a for a, _, _ in pairs]
    if any(a not in where_is or b not in where_is for a, b, _ in pairs):
        raise CheckFailed("Each pair must hold two sentences of the documents, as they are (strings), and a label.")
    if len(pairs) != expected or len(set(firsts)) != expected or any(where_is[a][1] == len(documents[where_is[a][0]]) - 1
                                                                     for a in firsts):
        raise CheckFailed(f"Every sentence that has a next sentence in its document must be an A exactly once: "
                          f"{expected} pairs for these {len(documents)} documents; you made {len(pairs)} "
                          f"({len(set(firsts))} different A's).")
    labels = {label for _, _, label in pairs}
    if not labels <= {0, 1}:
        raise CheckFailed(f"Labels are 0 (IsNext) and 1 (NotNext); yours include {sorted(labels - {0, 1})[:3]}.")
    consecutive = [where_is[b] == (where_is[a][0], where_is[a][1] + 1) for a, b, _ in pairs]
    same_doc = [where_is[a][0] == where_is[b][0] for a, b, _ in pairs]
    is_next = [label == 0 for _, _, label in pairs]
    if all(c != n for c, n in zip(consecutive, is_next)):
        raise CheckFailed("Your labels are inverted: 0 means IsNext (B follows A) and 1 means NotNext, as in "
                          "Hugging Face's BertForPreTraining.")
    if not all(c for c, n in zip(consecutive, is_next) if n):
        raise CheckFailed("A pair labelled 0 (IsNext) must have as B the sentence right after A in the same document.")
    not_next = [(a, b) for (a, b, _), s, n in zip(pairs, same_doc, is_next) if not n]
    if any(where_is[a][0] == where_is[b][0] for a, b in not_next):
        raise CheckFailed("A NotNext B was taken from A's own document (it may even be the true next sentence). Draw "
                          "the document of a random B among the OTHER documents.")
    share = sum(is_next) / len(pairs)
    if abs(share - 0.5) > 0.07:
        raise CheckFailed(f"{share:.0%} of your pairs are IsNext; half of them should be (checked on {len(pairs)} "
                          "pairs, so the share should be within 7% of 50%).")
    docs_used = len({where_is[b][0] for _, b in not_next})
    sentences_used = len({b for _, b in not_next})
    if docs_used < len(documents) // 2 or sentences_used < len(not_next) // 3:
        raise CheckFailed(f"Your random B's come from only {docs_used} documents and {sentences_used} different "
                          f"sentences (for {len(not_next)} NotNext pairs): pick the document at random, then a random "
                          "sentence in it.")
    print(f"✓ {len(pairs)} pairs, {share:.0%} IsNext, random B's from other documents")


# ---------------------------------------------------------------------------------------------------
# Part 4: the pretraining loss
# ---------------------------------------------------------------------------------------------------


def check_pretraining_loss(fn: Callable, seed: int | None = None) -> None:
    """Mean cross-entropy over the masked positions (labels != -100) plus mean cross-entropy of the NSP logits."""
    seed = seed_or_fresh(seed)
    g = generator(seed)
    B, S, V = 4, 10, 17
    mlm_logits, nsp_logits = torch.randn(B, S, V, generator=g), torch.randn(B, 2, generator=g)
    targets = torch.randint(0, V, (B, S), generator=g)
    chosen = torch.rand(B, S, generator=g) < 0.3
    chosen[0, 0] = True
    mlm_labels = targets.masked_fill(~chosen, IGNORE)
    nsp_labels = torch.tensor([0, 1, 1, 0])
    try:
        got = call(fn, LOSS_TASK, mlm_logits, mlm_labels, nsp_logits, nsp_labels)
    except NotImplementedError:
        raise
    except (RuntimeError, ValueError, IndexError) as err:
        raise CheckFailed(f"Your loss raised {type(err).__name__}: {first_line(err)}. F.cross_entropy wants the classes "
                          "in dim 1: flatten the MLM logits to (B*S, V) and the labels to (B*S,).") from None
    got = expect_tensor(got, "pretraining_loss(...)")
    if got.numel() != 1:
        raise CheckFailed(f"The loss must be a single number (a 0-dim tensor); yours has shape {tuple(got.shape)}.")
    got = got.reshape(())
    flat_logits, flat_labels = mlm_logits.reshape(-1, V), mlm_labels.reshape(-1)
    mlm = F.cross_entropy(flat_logits, flat_labels)
    nsp = F.cross_entropy(nsp_logits, nsp_labels)
    want = mlm + nsp
    if close(got, want):
        print("✓ the pretraining loss: masked-LM cross-entropy over the chosen positions plus NSP cross-entropy")
        return
    per_token = F.cross_entropy(flat_logits, flat_labels, reduction="none")  # 0 at ignored positions
    all_positions = F.cross_entropy(flat_logits, targets.reshape(-1))
    variants = {
        "You averaged the two losses; BERT's objective is their sum, mlm_loss + nsp_loss.": want / 2,
        "Your loss leaves out next sentence prediction: add F.cross_entropy(nsp_logits, nsp_labels).": mlm,
        "Your loss leaves out the masked language model: add the cross-entropy over the chosen positions.": nsp,
        "You averaged the MLM loss over all B*S positions; average over the chosen ones only (labels != -100), "
        "as F.cross_entropy does when it skips -100.": per_token.sum() / (B * S) + nsp,
        "Your MLM loss scores every position, chosen or not; the labels' -100 marks the positions to skip.":
            all_positions + nsp,
        "You summed the MLM cross-entropy over the chosen positions; average it (reduction='mean').":
            per_token.sum() + nsp,
        "You applied a softmax before F.cross_entropy, which applies log-softmax itself: pass the raw logits.":
            F.cross_entropy(flat_logits.softmax(-1), flat_labels) + F.cross_entropy(nsp_logits.softmax(-1), nsp_labels),
    }
    for message, value in variants.items():
        if close(got, value):
            raise CheckFailed(f"{message} {where(seed)}")
    raise CheckFailed(f"Your loss is {float(got):.4f}; mean MLM cross-entropy over the chosen positions plus mean NSP "
                      f"cross-entropy is {float(want):.4f} (off by {max_gap(got, want):.3g}). {where(seed)}")
