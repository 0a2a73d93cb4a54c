"""coursekit.grading.bert: each planted mistake earns its own diagnosis, the right answer passes every check,
locally and through the sandbox's proxies (as under `coursekit grade`)."""


import pytest

import coursekit.bert_data
from coursekit import grading
from coursekit.grading import CheckFailed, ShortcutUsed
from coursekit.sandbox import Limits, Sandbox
from tests.helpers import make_loss, make_masking, make_nsp, make_pack

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: two threads only fight (see conftest.py)


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
    ("no-flatten", r"\[loss.symptom.raised\] .*Expected target size \[4, 17\], got \[4, 10\]"),
    ("vector", "must be a single number"),
])
def test_each_loss_mistake_gets_its_own_diagnosis(kind, message):
    with pytest.raises(CheckFailed, match=message):
        grading.check_pretraining_loss(make_loss(kind), seed=3)


def test_shortcuts_through_the_reference_earn_nothing():
    def via_coursekit(input_ids, mask_id, vocab_size, special_ids, mlm_probability=0.15):
        return coursekit.bert_data.mask_tokens(input_ids, mask_id=mask_id, special_ids=special_ids,
                                               vocab_size=vocab_size, mask_prob=mlm_probability)

    with pytest.raises(ShortcutUsed, match="coursekit.bert_data"):
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
