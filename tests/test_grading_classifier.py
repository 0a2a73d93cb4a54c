"""coursekit.grading.classifier: the right answers pass under any seed, each planted mistake earns its own diagnosis
under any seed, shortcuts through the course's classifier earn nothing, and the trained-model check reads accuracy."""

import pytest
import torch

from coursekit import grading
from coursekit.grading import CheckFailed, ShortcutUsed
from tests.helpers import make_classifier, make_embedding, make_pool

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: two threads only fight (see conftest.py)

SEEDS = range(3)


def code_of(check, answer, seed, **kwargs):
    with pytest.raises(CheckFailed) as caught:
        check(answer, seed=seed, **kwargs)
    return caught.value


def test_right_answers_pass_under_any_seed(capsys):
    for seed in SEEDS:
        grading.check_embedding(make_embedding(), seed=seed)
        grading.check_pooling(make_pool(), seed=seed)
        grading.check_classifier(make_classifier(), seed=seed)
    assert capsys.readouterr().out.count("✓") == 3 * len(SEEDS)


@pytest.mark.parametrize("mistake, code", [
    (dict(positions="none"), "embedding.no-positions"),
    (dict(positions="from-1"), "embedding.positions-from-1"),
    (dict(positions="reversed"), "embedding.positions-reversed"),
    (dict(scaled=True), "embedding.scaled"),
])
def test_each_embedding_mistake_gets_its_own_code(mistake, code):
    for seed in SEEDS:
        assert code_of(grading.check_embedding, make_embedding(**mistake), seed).code == code


def _always_cls(hidden, key_padding_mask, how="cls"):
    return hidden[:, 0]


def _mean_over_batch(hidden, key_padding_mask, how="cls"):
    if how == "cls":
        return hidden[:, 0]
    real = (~key_padding_mask).unsqueeze(-1).float()
    return (hidden * real).sum(0) / real.sum(0)


@pytest.mark.parametrize("pool, code", [
    (make_pool(cls="first-text"), "pooling.cls-of-first-text"),
    (make_pool(cls="last"), "pooling.cls-from-last-position"),
    (make_pool(mean="all"), "pooling.mean-with-padding"),
    (make_pool(mean="by-length"), "pooling.mean-divided-by-length"),
    (make_pool(mean="sum"), "pooling.mean-not-divided"),
    (make_pool(mean="padding"), "pooling.mean-of-padding"),
    (_mean_over_batch, "pooling.mean-over-batch"),
    (_always_cls, "pooling.always-cls"),
])
def test_each_pooling_mistake_gets_its_own_code(pool, code):
    for seed in SEEDS:
        assert code_of(grading.check_pooling, pool, seed).code == code


@pytest.mark.parametrize("mistake, code", [
    (dict(mask="none"), "classifier.mask-ignored"),
    (dict(encoder=False), "classifier.encoder-skipped"),
    (dict(pooling="cls"), "classifier.pooling-ignored"),
    (dict(softmax=True), "classifier.softmax-output"),
])
def test_each_classifier_mistake_gets_its_own_code(mistake, code):
    for seed in SEEDS:
        assert code_of(grading.check_classifier, make_classifier(**mistake), seed).code == code


def test_a_classifier_built_on_a_wrong_part_says_which_test_to_fix_first():
    wrong_pool = make_pool(mean="sum")
    failure = code_of(grading.check_classifier, make_classifier(pool=wrong_pool), 1,
                      embedding=make_embedding(), pool=wrong_pool)
    assert failure.code == "classifier.symptom.values" or failure.code.startswith("classifier.")
    assert "Test 1 (embeddings) passes" in str(failure) and "Test 2 (pooling) fails" in str(failure)


def test_the_course_classifier_is_a_shortcut():
    import coursekit.classifier

    def via_course(hidden, key_padding_mask, how="cls"):
        config = coursekit.classifier.ClassifierConfig(vocab_size=10, num_classes=2, d_model=hidden.size(-1),
                                                       pooling=how)
        return coursekit.classifier.TransformerClassifier.pool(
            type("Host", (), {"config": config})(), hidden, key_padding_mask)

    with pytest.raises(ShortcutUsed):
        grading.check_pooling(via_course, seed=0)


class _Fixed(torch.nn.Module):
    """A 'trained model' that answers the label stored for each text (a fraction of them wrong)."""

    def __init__(self, wrong_every):
        super().__init__()
        self.wrong_every = wrong_every

    def forward(self, input_ids, key_padding_mask):
        labels = input_ids[:, 0] % 3
        wrong = torch.arange(len(labels)) % self.wrong_every == 0
        return torch.nn.functional.one_hot(torch.where(wrong, (labels + 1) % 3, labels), 3).float()


def _encode(texts):
    ids = torch.tensor([[int(t)] for t in texts])
    return ids, torch.zeros_like(ids, dtype=torch.bool)


def test_the_trained_check_passes_at_the_bar_and_names_the_confusions_below_it(capsys):
    examples = [(str(i), i % 3) for i in range(1200)]  # more than one chunk of 512
    grading.check_trained_classifier(_Fixed(wrong_every=5), examples, _encode, ["a", "b", "c"])  # every fifth of each chunk of 512 wrong
    assert "79.8%" in capsys.readouterr().out
    with pytest.raises(CheckFailed) as caught:
        grading.check_trained_classifier(_Fixed(wrong_every=2), examples, _encode, ["a", "b", "c"])  # 50% right
    assert caught.value.code == "trained.symptom.low-score" and "read as" in str(caught.value)
