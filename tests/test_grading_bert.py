"""coursekit.grading.bert: each planted mistake earns its own diagnosis, the right answer passes every check,
locally and through the sandbox's proxies (as under `coursekit grade`)."""


import pytest
import torch

import coursekit.bert.pretraining_data
from coursekit import grading
from coursekit.grading import CheckFailed, ShortcutUsed
from tests.helpers import make_loss, make_masking, make_nsp, make_pack, make_step, sgd, tiny_bert
from coursekit.autograder.execute import CheckedSandbox as Sandbox, Limits

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


def code_of(check, answer, seed=3):
    with pytest.raises(CheckFailed) as caught:
        check(answer, seed=seed)
    return caught.value


@pytest.mark.parametrize("mistake, check, code", [
    (dict(skip_specials=False), grading.check_masking_choice, "masking.specials-chosen"),
    (dict(ignore_elsewhere=False), grading.check_masking_choice, "masking.labels-everywhere"),
    (dict(labels="masked"), grading.check_masking_choice, "masking.labels-from-masked"),
    (dict(random_everywhere=True), grading.check_masking_choice, "masking.changes-unlabelled"),
    (dict(p=0.3), grading.check_masking_choice, "masking.symptom.values"),
    (dict(label_only_masked=True), grading.check_masking_choice, "masking.only-mask-labelled"),
    (dict(probs=(1.0, 0.0)), grading.check_masking_proportions, "masking.all-mask"),
    (dict(probs=(0.8, 0.0)), grading.check_masking_proportions, "masking.no-random"),
    (dict(probs=(0.8, 0.2)), grading.check_masking_proportions, "masking.none-unchanged"),
    (dict(probs=(0.8, 0.02)), grading.check_masking_proportions, "masking.random-of-rest-0.1"),
    (dict(probs=(0.6, 0.2)), grading.check_masking_proportions, "masking.symptom.values"),
    (dict(random_from="all"), grading.check_masking_proportions, "masking.random-specials"),
    (dict(random_from="one"), grading.check_masking_proportions, "masking.symptom.values"),
])
def test_each_masking_mistake_gets_its_own_code(mistake, check, code):
    assert code_of(check, make_masking(**mistake)).code == code


@pytest.mark.parametrize("kind, code", [
    ("no-final-sep", "pair.no-final-sep"),
    ("no-cls", "pair.no-cls"),
    ("first-sep-in-b", "pair.first-sep-in-b"),
    ("last-sep-in-a", "pair.last-sep-in-a"),
])
def test_each_packing_mistake_gets_its_own_code(kind, code):
    assert code_of(grading.check_pack_pair, make_pack(kind)).code == code


@pytest.mark.parametrize("mistake, code", [
    (dict(invert=True), "nsp.labels-inverted"),
    (dict(any_document=True), "nsp.notnext-same-document"),
    (dict(p_next=0.3), "nsp.symptom.values"),
    (dict(skip=True), "nsp.symptom.values"),
    (dict(offset=2), "nsp.isnext-not-next"),
    (dict(first_sentence=True), "nsp.symptom.values"),
])
def test_each_nsp_mistake_gets_its_own_code(mistake, code):
    assert code_of(grading.check_nsp_pairs, make_nsp(**mistake)).code == code


def test_pairs_drawn_from_the_random_module_are_not_reproducible():
    """The notebook asks for the same pairs from the same seed: a function that ignores rng fails, however good its
    pairs look (it used to score full marks)."""
    import random

    def global_random(documents, seed=0):
        return make_nsp()(documents, seed=random.randrange(2**31))

    error = code_of(grading.check_nsp_pairs, global_random)
    assert error.code == "nsp.not-reproducible" and "Called twice with the same seed" in str(error)

    def fixed_seed(documents, seed=0):
        return make_nsp()(documents, seed=0)

    assert code_of(grading.check_nsp_pairs, fixed_seed).code == "nsp.seed-ignored"


@pytest.mark.parametrize("kind, code", [
    ("mean", "loss.averaged"),
    ("no-nsp", "loss.no-nsp"),
    ("no-mlm", "loss.no-mlm"),
    ("all-positions", "loss.mlm-over-all-positions"),
    ("sum", "loss.mlm-summed"),
    ("softmax", "loss.softmax-first"),
    ("no-flatten", "loss.symptom.raised"),
    ("vector", "loss.symptom.shape"),
])
def test_each_loss_mistake_gets_its_own_code(kind, code):
    assert code_of(grading.check_pretraining_loss, make_loss(kind)).code == code


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


def test_pairs_as_lists_are_accepted(capsys):
    def as_lists(documents, seed=0):
        return [list(pair) for pair in make_nsp()(documents, seed)]

    grading.check_nsp_pairs(as_lists, seed=5)
    assert "✓" in capsys.readouterr().out


# ---------------------------------------------------------------- Part 5: one pretraining step


def step_code(step, seed=3, **kwargs):
    with pytest.raises(CheckFailed) as caught:
        grading.check_pretraining_step(step, tiny_bert, sgd, seed=seed, **kwargs)
    return caught.value


def test_the_step_reference_is_coursekits_own_training_step():
    """The catalogue's reference, two SGD steps from the probe's weights, equals coursekit.bert.training's
    pretraining_step (through coursekit.train.train_step) on the same model, batches and optimizer."""
    from coursekit.bert.pretraining_data import PretrainingBatch
    from coursekit.bert.training import pretraining_step
    from coursekit.grading.bert import STEP, STEP_LR, _step_model, step_variant

    probe = STEP.probes(4)[0]
    first, second, state = step_variant(probe["state"], probe["batches"])
    model = _step_model(probe["state"]).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=STEP_LR)
    course = [pretraining_step(model, PretrainingBatch(**batch), optimizer, clip_grad_norm=1.0)["loss"]
              for batch in probe["batches"]]
    assert course == pytest.approx([first, second], rel=1e-5)
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, state[name], atol=1e-6, rtol=1e-5)
    assert not torch.equal(state["bert.embeddings.word_embeddings.weight"],
                           probe["state"]["bert.embeddings.word_embeddings.weight"])


def test_a_right_step_passes_under_any_seed(capsys):
    for seed in range(5):
        grading.check_pretraining_step(make_step(), tiny_bert, sgd, seed=seed)
    assert capsys.readouterr().out.count("✓") == 5


@pytest.mark.parametrize("mistake, code", [
    (dict(zero_grad="never"), "step.no-zero-grad"),
    (dict(zero_grad="before-step"), "step.no-update"),
    (dict(clip="never"), "step.not-clipped"),
    (dict(clip="after-step"), "step.not-clipped"),
    (dict(item=False), "step.returns-tensor"),
])
def test_each_step_mistake_gets_its_own_code_under_any_seed(mistake, code):
    for seed in range(3):
        assert step_code(make_step(**mistake), seed=seed).code == code


def test_a_failing_step_says_whether_the_loss_test_passes():
    said = str(step_code(make_step(clip="never"), loss=make_loss()))
    assert "Test 5, the loss, passes" in said
    said = str(step_code(make_step(clip="never"), loss=make_loss("sum")))
    assert "Test 5, the loss, fails" in said


def test_a_step_through_the_course_training_code_earns_nothing():
    from coursekit.train import train_step

    def via_train_step(model, optimizer, batch):
        def loss_fn(model, batch):
            mlm_logits, nsp_logits = model(batch["input_ids"], batch["token_type_ids"], batch["key_padding_mask"])
            return make_loss()(mlm_logits, batch["mlm_labels"], nsp_logits, batch["nsp_labels"])
        return float(train_step(model, batch, optimizer, loss_fn=loss_fn, clip_grad_norm=1.0))

    with pytest.raises(ShortcutUsed, match="train_step"):
        grading.check_pretraining_step(via_train_step, tiny_bert, sgd, seed=0)


def test_a_step_that_returns_no_number_is_reported_not_crashed():
    def returns_nothing(model, optimizer, batch):
        make_step()(model, optimizer, batch)

    assert step_code(returns_nothing).code == "step.symptom.return-type"
