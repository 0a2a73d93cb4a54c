"""coursekit.grading.bert: each planted mistake earns its own diagnosis, the right answer passes every check,
locally and through the sandbox's proxies (as under `coursekit grade`)."""

import random

import pytest
import torch
import torch.nn.functional as F

import coursekit.bert.pretraining_data
from coursekit import grading
from coursekit.grading import CheckFailed, ShortcutUsed
from coursekit.autograder.execute import CheckedSandbox as Sandbox, Limits


def make_masking(*, skip_specials=True, labels="original", ignore_elsewhere=True, p=0.15, probs=(0.8, 0.1),
                 random_from="ordinary", random_everywhere=False, label_only_masked=False):
    """A learner's mask_tokens, correct by default, with one mistake planted by a keyword."""
    def mask_tokens(input_ids, mask_id, vocab_size, special_ids, mlm_probability=0.15):
        special = torch.isin(input_ids, torch.tensor(special_ids))
        chosen = torch.rand(input_ids.shape) < p
        if skip_specials:
            chosen &= ~special
        fate = torch.rand(input_ids.shape)
        to_mask = chosen & (fate < probs[0])
        to_random = (fate >= probs[0]) & (fate < probs[0] + probs[1])
        to_random = to_random & ~special if random_everywhere else to_random & chosen
        ordinary = torch.tensor([i for i in range(vocab_size) if i not in special_ids])
        random_ids = {"ordinary": ordinary[torch.randint(len(ordinary), input_ids.shape)],
                      "all": torch.randint(vocab_size, input_ids.shape),
                      "one": torch.full(input_ids.shape, int(ordinary[0]))}[random_from]
        masked = torch.where(to_random, random_ids, input_ids.masked_fill(to_mask, mask_id))
        labelled = to_mask if label_only_masked else chosen
        source = input_ids if labels == "original" else masked
        out = source.masked_fill(~labelled, -100) if ignore_elsewhere else source.clone()
        return masked, out
    return mask_tokens


def make_pack(kind="right"):
    def pack_pair(a_ids, b_ids, cls_id, sep_id):
        ids = [cls_id, *a_ids, sep_id, *b_ids, sep_id]
        types = [0] * (len(a_ids) + 2) + [1] * (len(b_ids) + 1)
        if kind == "no-final-sep":
            return ids[:-1], types[:-1]
        if kind == "no-cls":
            return ids[1:], types[1:]
        if kind == "first-sep-in-b":
            types[len(a_ids) + 1] = 1
        if kind == "last-sep-in-a":
            types[-1] = 0
        return ids, types
    return pack_pair


def make_nsp(*, p_next=0.5, invert=False, any_document=False, skip=False, first_sentence=False, offset=1):
    """A learner's make_nsp_pairs, correct by default, with one mistake planted by a keyword."""
    def make_nsp_pairs(documents, seed=0):
        rng = random.Random(seed)
        pairs = []
        for i, document in enumerate(documents):
            for j in range(len(document) - 1 - (1 if skip else 0)):
                if rng.random() < p_next and j + offset < len(document):
                    pairs.append((document[j], document[j + offset], 1 if invert else 0))
                else:
                    if any_document:
                        other = rng.randrange(len(documents))
                    else:
                        other = rng.randrange(len(documents) - 1)
                        other += other >= i
                    b = documents[other][0] if first_sentence else rng.choice(documents[other])
                    pairs.append((document[j], b, 0 if invert else 1))
        return pairs
    return make_nsp_pairs


def make_loss(kind="right"):
    def pretraining_loss(mlm_logits, mlm_labels, nsp_logits, nsp_labels):
        V = mlm_logits.size(-1)
        logits, labels = mlm_logits.reshape(-1, V), mlm_labels.reshape(-1)
        if kind == "no-flatten":
            return F.cross_entropy(mlm_logits, mlm_labels) + F.cross_entropy(nsp_logits, nsp_labels)
        if kind == "softmax":
            return F.cross_entropy(logits.softmax(-1), labels) + F.cross_entropy(nsp_logits.softmax(-1), nsp_labels)
        mlm = F.cross_entropy(logits, labels)
        nsp = F.cross_entropy(nsp_logits, nsp_labels)
        per_token = F.cross_entropy(logits, labels, reduction="none")
        return {"right": mlm + nsp, "mean": (mlm + nsp) / 2, "no-nsp": mlm, "no-mlm": nsp,
                "all-positions": per_token.sum() / labels.numel() + nsp, "sum": per_token.sum() + nsp,
                "vector": torch.stack([mlm, nsp])}[kind]
    return pretraining_loss


def test_correct_answers_pass(capsys):
    grading.check_masking_choice(make_masking())
    grading.check_masking_proportions(make_masking())
    grading.check_pack_pair(make_pack())
    grading.check_nsp_pairs(make_nsp())
    grading.check_pretraining_loss(make_loss())
    assert capsys.readouterr().out.count("✓") == 5


def test_the_statistical_checks_do_not_fail_a_correct_answer_by_chance():
    """Tolerances are several standard deviations wide: twenty fresh draws of each all pass."""
    for _ in range(20):
        grading.check_masking_choice(make_masking())
        grading.check_masking_proportions(make_masking())
        grading.check_nsp_pairs(make_nsp())


@pytest.mark.parametrize("mistake, check, message", [
    (dict(skip_specials=False), grading.check_masking_choice, r"Special tokens were masked: you chose \[CLS\]"),
    (dict(ignore_elsewhere=False), grading.check_masking_choice, "Your labels keep every token"),
    (dict(labels="masked"), grading.check_masking_choice, "must hold the ORIGINAL token ids"),
    (dict(random_everywhere=True), grading.check_masking_choice, "whose label is -100"),
    (dict(p=0.3), grading.check_masking_choice, r"You chose \d+\.\d% of the ordinary tokens"),
    (dict(label_only_masked=True), grading.check_masking_choice, "Only the tokens replaced by \\[MASK\\] have labels"),
    (dict(probs=(1.0, 0.0)), grading.check_masking_proportions, "Every chosen token became \\[MASK\\]"),
    (dict(probs=(0.8, 0.0)), grading.check_masking_proportions, "You never put a random token"),
    (dict(probs=(0.8, 0.2)), grading.check_masking_proportions, "never leave a chosen token unchanged"),
    (dict(probs=(0.8, 0.02)), grading.check_masking_proportions, "HALF get a random token"),
    (dict(probs=(0.6, 0.2)), grading.check_masking_proportions, r"Wrong 80/10/10 proportions: yours are \d+\.\d% \[MASK\]"),
    (dict(random_from="all"), grading.check_masking_proportions, "random replacements are special tokens"),
    (dict(random_from="one"), grading.check_masking_proportions, "use only 1 different ids"),
])
def test_each_masking_mistake_gets_its_own_diagnosis(mistake, check, message):
    with pytest.raises(CheckFailed, match=message):
        check(make_masking(**mistake), seed=3)


@pytest.mark.parametrize("kind, message", [
    ("no-final-sep", "no \\[SEP\\] after the second sentence"),
    ("no-cls", "does not start with \\[CLS\\]"),
    ("first-sep-in-b", "The \\[SEP\\] that closes A belongs to segment 0"),
    ("last-sep-in-a", "The final \\[SEP\\] belongs to segment 1"),
])
def test_each_packing_mistake_gets_its_own_diagnosis(kind, message):
    with pytest.raises(CheckFailed, match=message):
        grading.check_pack_pair(make_pack(kind), seed=3)


@pytest.mark.parametrize("mistake, message", [
    (dict(invert=True), "labels are inverted"),
    (dict(any_document=True), "NotNext B was taken from A's own document"),
    (dict(p_next=0.3), r"\d+% of your pairs are IsNext"),
    (dict(skip=True), "must be an A exactly once"),
    (dict(offset=2), "must have as B the sentence right after A"),
    (dict(first_sentence=True), "different sentences"),
])
def test_each_nsp_mistake_gets_its_own_diagnosis(mistake, message):
    with pytest.raises(CheckFailed, match=message):
        grading.check_nsp_pairs(make_nsp(**mistake), seed=3)


@pytest.mark.parametrize("kind, message", [
    ("mean", "averaged the two losses"),
    ("no-nsp", "leaves out next sentence prediction"),
    ("no-mlm", "leaves out the masked language model"),
    ("all-positions", "averaged the MLM loss over all B\\*S positions"),
    ("sum", "summed the MLM cross-entropy"),
    ("softmax", "applied a softmax before F.cross_entropy"),
    ("no-flatten", "wants the classes in dim 1"),
    ("vector", "must be a single number"),
])
def test_each_loss_mistake_gets_its_own_diagnosis(kind, message):
    with pytest.raises(CheckFailed, match=message):
        grading.check_pretraining_loss(make_loss(kind), seed=3)


def test_shortcuts_through_the_reference_earn_nothing():
    def via_coursekit(input_ids, mask_id, vocab_size, special_ids, mlm_probability=0.15):
        return coursekit.bert.pretraining_data.mask_tokens(input_ids, mask_id=mask_id, special_ids=special_ids,
                                                           vocab_size=vocab_size, mask_prob=mlm_probability)

    with pytest.raises(ShortcutUsed, match="coursekit.bert"):
        grading.check_masking_choice(via_coursekit, seed=0)

    def via_transformers(input_ids, mask_id, vocab_size, special_ids, mlm_probability=0.15):
        from transformers.data.data_collator import DataCollatorForLanguageModeling
        DataCollatorForLanguageModeling.__init__  # noqa: B018 (reaching the collator is what is caught)
        collator = object.__new__(DataCollatorForLanguageModeling)
        try:
            collator.torch_mask_tokens(input_ids)
        except Exception:
            pass
        return make_masking()(input_ids, mask_id, vocab_size, special_ids, mlm_probability)

    with pytest.raises(ShortcutUsed, match="transformers' data collators"):
        grading.check_masking_choice(via_transformers, seed=0)


LEARNER = '''
import random
import torch
import torch.nn.functional as F

def mask_tokens(input_ids, mask_id, vocab_size, special_ids, mlm_probability=0.15):
    special = torch.isin(input_ids, torch.tensor(special_ids))
    chosen = (torch.rand(input_ids.shape) < mlm_probability) & ~special
    labels = input_ids.masked_fill(~chosen, -100)
    fate = torch.rand(input_ids.shape)
    ordinary = torch.tensor([i for i in range(vocab_size) if i not in special_ids])
    masked = input_ids.masked_fill(chosen & (fate < 0.8), mask_id)
    masked = torch.where(chosen & (fate >= 0.8) & (fate < 0.9), ordinary[torch.randint(len(ordinary), input_ids.shape)], masked)
    return masked, labels

def masks_specials(input_ids, mask_id, vocab_size, special_ids, mlm_probability=0.15):
    chosen = torch.rand(input_ids.shape) < mlm_probability
    return input_ids.masked_fill(chosen, mask_id), input_ids.masked_fill(~chosen, -100)

def pack_pair(a_ids, b_ids, cls_id, sep_id):
    return [cls_id, *a_ids, sep_id, *b_ids, sep_id], [0] * (len(a_ids) + 2) + [1] * (len(b_ids) + 1)

def make_nsp_pairs(documents, seed=0):
    rng = random.Random(seed)
    pairs = []
    for i, document in enumerate(documents):
        for j in range(len(document) - 1):
            if rng.random() < 0.5:
                pairs.append((document[j], document[j + 1], 0))
            else:
                other = rng.randrange(len(documents) - 1)
                other += other >= i
                pairs.append((document[j], rng.choice(documents[other]), 1))
    return pairs

def pretraining_loss(mlm_logits, mlm_labels, nsp_logits, nsp_labels):
    V = mlm_logits.size(-1)
    return F.cross_entropy(mlm_logits.reshape(-1, V), mlm_labels.reshape(-1)) + F.cross_entropy(nsp_logits, nsp_labels)

def mean_loss(mlm_logits, mlm_labels, nsp_logits, nsp_labels):
    return pretraining_loss(mlm_logits, mlm_labels, nsp_logits, nsp_labels) / 2
'''


def test_checks_work_on_the_sandbox_proxies(tmp_path, capsys):
    with Sandbox(str(tmp_path), Limits(memory_mb=2048, cell_timeout_s=60)) as box:
        assert box.run_cell(LEARNER)["error"] is None
        grading.check_masking_choice(box.lookup("mask_tokens"), seed=0)
        grading.check_masking_proportions(box.lookup("mask_tokens"))
        grading.check_pack_pair(box.lookup("pack_pair"))
        grading.check_nsp_pairs(box.lookup("make_nsp_pairs"))
        grading.check_pretraining_loss(box.lookup("pretraining_loss"))
        assert capsys.readouterr().out.count("✓") == 5
        with pytest.raises(CheckFailed, match="Special tokens were masked"):
            grading.check_masking_choice(box.lookup("masks_specials"), seed=0)
        with pytest.raises(CheckFailed, match="averaged the two losses"):
            grading.check_pretraining_loss(box.lookup("mean_loss"), seed=0)


def test_pairs_as_lists_are_accepted(capsys):
    def as_lists(documents, seed=0):
        return [list(pair) for pair in make_nsp()(documents, seed)]

    grading.check_nsp_pairs(as_lists, seed=5)
    assert "✓" in capsys.readouterr().out
