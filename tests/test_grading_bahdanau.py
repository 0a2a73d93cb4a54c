"""coursekit.grading.bahdanau: each planted mistake earns its own diagnosis, the right answer passes every check,
locally and through the sandbox's proxies (as under `coursekit grade`)."""

import pytest
import torch
from torch import nn

import coursekit.attention
from coursekit import grading
from coursekit.data import date_task
from coursekit.grading import CheckFailed, ShortcutUsed
from coursekit.autograder.execute import CheckedSandbox as Sandbox, Limits
from coursekit.seq2seq import BahdanauConfig, BahdanauEncoderDecoder


def make_masked_softmax(*, invert=False, ignore=False, dim=-1, after=False, keep_dims=True):
    """A learner's masked_softmax, correct by default, with one mistake planted by a keyword."""
    def masked_softmax(scores, key_padding_mask=None):
        mask = None if key_padding_mask is None or ignore else key_padding_mask[:, None, :]
        if mask is not None and invert:
            mask = ~mask
        if mask is not None and not after:
            scores = scores.masked_fill(mask, float("-inf"))
        weights = torch.softmax(scores, dim=dim)
        if mask is not None and after:
            weights = weights.masked_fill(mask, 0.0)
        return weights if keep_dims else weights.flatten(0, 1)
    return masked_softmax


def make_additive(*, tanh="inside", squeeze=True, transpose=False, average="value", step="squeeze",
                  softmax=None, rename=False):
    """A learner's AdditiveAttention class, correct by default, with one mistake planted by a keyword."""
    softmax = softmax or make_masked_softmax()

    class AdditiveAttention(nn.Module):
        def __init__(self, query_dim, key_dim, hidden_dim):
            super().__init__()
            self.W_q = nn.Linear(query_dim, hidden_dim, bias=False)
            self.W_k = nn.Linear(key_dim, hidden_dim)
            if rename:
                self.w = nn.Linear(hidden_dim, 1, bias=False)
            else:
                self.v = nn.Linear(hidden_dim, 1, bias=False)

        def score(self, query, key):
            q, k = self.W_q(query).unsqueeze(2), self.W_k(key).unsqueeze(1)
            hidden = {"inside": torch.tanh(q + k), "none": q + k, "outside": q + k}[tanh]
            scores = self.v(hidden)
            if tanh == "outside":
                scores = torch.tanh(scores)
            scores = scores.squeeze(-1) if squeeze else scores
            return scores.transpose(1, 2) if transpose else scores

        def forward(self, query, key, value, key_padding_mask=None):
            single = query.dim() == 2
            if single and step != "fail":
                query = query.unsqueeze(1)
            weights = softmax(self.score(query, key), key_padding_mask)
            context = weights @ (value if average == "value" else key)
            if single and step == "squeeze":
                return context.squeeze(1), weights.squeeze(1)
            return context, weights
    return AdditiveAttention


@pytest.mark.parametrize("check", [grading.check_additive_scores, grading.check_additive_attention,
                                   grading.check_single_step])
def test_correct_module_passes(check, capsys):
    check(make_additive())
    assert "✓" in capsys.readouterr().out


def test_correct_masked_softmax_passes(capsys):
    grading.check_masked_softmax(make_masked_softmax())
    assert "✓" in capsys.readouterr().out


@pytest.mark.parametrize("mistake, message", [
    (dict(dim=-2), "softmax ran over the queries"),
    (dict(invert=True), "padding mask is inverted"),
    (dict(ignore=True), "ignores key_padding_mask"),
    (dict(after=True), "before the softmax, not the weights after it"),
    (dict(keep_dims=False), r"must have the same shape"),
])
def test_each_softmax_mistake_gets_its_own_diagnosis(mistake, message):
    with pytest.raises(CheckFailed, match=message):
        grading.check_masked_softmax(make_masked_softmax(**mistake), seed=3)


@pytest.mark.parametrize("mistake, check, message", [
    (dict(tanh="none"), grading.check_additive_scores, "left out the tanh"),
    (dict(tanh="outside"), grading.check_additive_scores, "applied tanh after v"),
    (dict(squeeze=False), grading.check_additive_scores, "squeeze that last dim"),
    (dict(transpose=True), grading.check_additive_scores, r"the transpose of \(B, T, S\)"),
    (dict(rename=True), grading.check_additive_scores, "Could not give your module the reference's weights"),
    (dict(average="key"), grading.check_additive_attention, "average the keys"),
    (dict(softmax=make_masked_softmax(invert=True)), grading.check_additive_attention, "padding mask is inverted"),
    (dict(softmax=make_masked_softmax(ignore=True)), grading.check_additive_attention, "ignores key_padding_mask"),
    (dict(step="keep"), grading.check_single_step, r"Squeeze the T = 1 dim"),
    (dict(step="fail"), grading.check_single_step, "fails on one decoder step"),
])
def test_each_module_mistake_gets_its_own_diagnosis(mistake, check, message):
    with pytest.raises(CheckFailed, match=message):
        check(make_additive(**mistake), seed=11)


def test_one_mistake_costs_one_part():
    """The context and single-step checks use the learner's own scores, so a wrong score fails only its test."""
    no_tanh = make_additive(tanh="none")
    grading.check_additive_attention(no_tanh)
    grading.check_single_step(no_tanh)
    keys_averaged = make_additive(average="key")
    grading.check_single_step(keys_averaged)
    grading.check_additive_scores(keys_averaged)


def test_shortcuts_through_the_reference_earn_nothing():
    class Subclass(coursekit.attention.AdditiveAttention):
        pass

    with pytest.raises(ShortcutUsed, match="coursekit.attention"):
        grading.check_additive_scores(Subclass, seed=1)

    def fused_softmax(scores, key_padding_mask=None):
        eye = torch.eye(scores.size(-1)).expand(scores.size(0), -1, -1)
        torch.nn.functional.scaled_dot_product_attention(eye[:, :1], eye, eye)
        return make_masked_softmax()(scores, key_padding_mask)

    with pytest.raises(ShortcutUsed, match="scaled_dot_product_attention"):
        grading.check_masked_softmax(fused_softmax, seed=1)

    def attend_softmax(scores, key_padding_mask=None):
        mask = key_padding_mask[:, None, :] if key_padding_mask is not None else None
        return coursekit.attention.attend(scores, torch.zeros(scores.size(0), scores.size(-1), 1), mask)[1]

    with pytest.raises(ShortcutUsed, match="coursekit.attention"):
        grading.check_masked_softmax(attend_softmax, seed=1)


# --- the trained model -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_task():
    return date_task(n=600, seed=0, languages=("en",))


class Oracle(nn.Module):
    """A "model" that knows every answer: to test that the check passes a model that translates correctly."""

    def __init__(self, task):
        super().__init__()
        pairs = list(task.train) + list(task.valid) + list(task.test)
        self.answers = {tuple(task.src_vocab.encode(s)): task.tgt_vocab.encode(t) + [task.tgt_vocab.stop_id]
                        for s, t in pairs}

    def encode(self, src, src_key_padding_mask):
        rows = [tuple(r[~m].tolist()) for r, m in zip(src, src_key_padding_mask)]
        width = max(len(self.answers[r]) for r in rows)
        targets = torch.tensor([self.answers[r] + [0] * (width - len(self.answers[r])) for r in rows])
        return {"targets": targets, "step": torch.zeros(len(rows), dtype=torch.long)}

    def decode_step(self, token, state):
        step = int(state["step"][0])
        index = state["targets"][:, min(step, state["targets"].size(1) - 1)]
        logits = torch.nn.functional.one_hot(index, 15).float() * 10
        return logits, {**state, "step": state["step"] + 1}, None


def test_a_model_that_translates_passes(small_task, capsys):
    grading.check_trained_date_model(Oracle(small_task), small_task, seed=0, n=50)
    grading.check_trained_date_model(Oracle(small_task), small_task, n=50)
    assert "100% of 50 held-out dates" in capsys.readouterr().out


def test_an_untrained_model_fails_with_its_score(small_task):
    torch.manual_seed(0)
    config = BahdanauConfig(len(small_task.src_vocab), len(small_task.tgt_vocab), 16, 32, 32)
    model = BahdanauEncoderDecoder(config)
    model.attention = make_additive()(32, 64, 32)
    with pytest.raises(CheckFailed, match=r"writes 0% of 50 held-out dates exactly right; it needs 80%"):
        grading.check_trained_date_model(model, small_task, seed=0, n=50)


def test_a_model_still_using_the_reference_attention_is_caught(small_task):
    config = BahdanauConfig(len(small_task.src_vocab), len(small_task.tgt_vocab), 16, 32, 32)
    with pytest.raises(ShortcutUsed, match="still attends with coursekit's AdditiveAttention"):
        grading.check_trained_date_model(BahdanauEncoderDecoder(config), small_task, seed=0, n=20)


# --- through the sandbox, as `coursekit grade` runs them -----------------------------------------------------

LEARNER = '''
import torch
from torch import nn
from coursekit.seq2seq import BahdanauConfig, BahdanauEncoderDecoder

def masked_softmax(scores, key_padding_mask=None):
    if key_padding_mask is not None:
        scores = scores.masked_fill(key_padding_mask[:, None, :], float("-inf"))
    return torch.softmax(scores, dim=-1)

def inverted_softmax(scores, key_padding_mask=None):
    if key_padding_mask is not None:
        scores = scores.masked_fill(~key_padding_mask[:, None, :], float("-inf"))
    return torch.softmax(scores, dim=-1)

class AdditiveAttention(nn.Module):
    def __init__(self, query_dim, key_dim, hidden_dim, tanh=True):
        super().__init__()
        self.W_q = nn.Linear(query_dim, hidden_dim, bias=False)
        self.W_k = nn.Linear(key_dim, hidden_dim)
        self.v = nn.Linear(hidden_dim, 1, bias=False)
        self.tanh = tanh

    def score(self, query, key):
        hidden = self.W_q(query).unsqueeze(2) + self.W_k(key).unsqueeze(1)
        return self.v(torch.tanh(hidden) if self.tanh else hidden).squeeze(-1)

    def forward(self, query, key, value, key_padding_mask=None):
        single = query.dim() == 2
        query = query.unsqueeze(1) if single else query
        weights = masked_softmax(self.score(query, key), key_padding_mask)
        context = weights @ value
        return (context.squeeze(1), weights.squeeze(1)) if single else (context, weights)

class NoTanh(AdditiveAttention):
    def __init__(self, query_dim, key_dim, hidden_dim):
        super().__init__(query_dim, key_dim, hidden_dim, tanh=False)

def untrained(src_vocab_size, tgt_vocab_size):
    torch.manual_seed(0)
    model = BahdanauEncoderDecoder(BahdanauConfig(src_vocab_size, tgt_vocab_size, 16, 32, 32))
    model.attention = AdditiveAttention(32, 64, 32)
    return model

def reference_model(src_vocab_size, tgt_vocab_size):
    return BahdanauEncoderDecoder(BahdanauConfig(src_vocab_size, tgt_vocab_size, 16, 32, 32))
'''


def test_checks_work_on_the_sandbox_proxies(tmp_path, small_task, capsys):
    with Sandbox(str(tmp_path), Limits(memory_mb=2048, cell_timeout_s=60)) as box:
        assert box.run_cell(LEARNER)["error"] is None
        grading.check_masked_softmax(box.lookup("masked_softmax"), seed=0)
        grading.check_additive_scores(box.lookup("AdditiveAttention"), seed=0)
        grading.check_additive_attention(box.lookup("AdditiveAttention"), seed=0)
        grading.check_single_step(box.lookup("AdditiveAttention"))
        assert capsys.readouterr().out.count("✓") == 4
        with pytest.raises(CheckFailed, match="padding mask is inverted"):
            grading.check_masked_softmax(box.lookup("inverted_softmax"), seed=0)
        with pytest.raises(CheckFailed, match="left out the tanh"):
            grading.check_additive_scores(box.lookup("NoTanh"), seed=0)
        sizes = len(small_task.src_vocab), len(small_task.tgt_vocab)
        with pytest.raises(CheckFailed, match="writes 0% of 30 held-out dates"):
            grading.check_trained_date_model(box.lookup("untrained")(*sizes), small_task, seed=0, n=30)
        with pytest.raises(ShortcutUsed, match="still attends with coursekit's AdditiveAttention"):
            grading.check_trained_date_model(box.lookup("reference_model")(*sizes), small_task, seed=0, n=30)

