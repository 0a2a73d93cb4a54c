"""coursekit.grading.gpt: the references agree with coursekit's GPT, each planted mistake earns its own diagnosis, the
right answers pass, and the sampling check tells every rule apart under any seed."""

import itertools

import pytest
import torch

import coursekit.grading.gpt as checks
from coursekit import grading
from coursekit.gpt import GPT, GPTConfig, CausalSelfAttention, LayerCache, generate
from coursekit.grading import CheckFailed
from coursekit.masks import causal_mask
from tests.helpers import make_causal_attention, make_generate, make_next_token, tiny_gpt

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: two threads only fight (see conftest.py)


def test_the_attention_reference_is_coursekits_causal_attention_with_and_without_a_cache():
    state = checks._reference_state(5)
    course = CausalSelfAttention(checks.D, checks.H)
    course.load_state_dict(state)
    x = torch.randn(checks.B, 9, checks.D)
    with torch.no_grad():
        full, cache, _ = course(x, causal_mask(9, 9))
        ours, (k, v) = checks.attention_variant(state, x)
        torch.testing.assert_close(ours, full, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close((k, v), (cache.k, cache.v))
        first, past = checks.attention_variant(state, x[:, :6])
        rest, _, _ = course(x[:, 6:], causal_mask(3, 9), LayerCache(*past))
        torch.testing.assert_close(checks.attention_variant(state, x[:, 6:], past)[0], rest, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(torch.cat([first, rest], dim=1), full, atol=1e-5, rtol=1e-5)


def test_the_loop_reference_is_coursekits_greedy_generate_and_reads_one_token_per_step():
    probe = checks.LOOP.probes(4)[0]
    ids, calls = checks.loop_variant(probe["model"], probe["prompt"], probe["steps"])
    expected = generate(probe["model"], probe["prompt"], probe["steps"], temperature=0.0)
    assert torch.equal(ids, expected)
    assert calls == [[checks.PROMPT, False]] + [[1, True]] * (checks.NEW - 1)
    uncached = generate(probe["model"], probe["prompt"], probe["steps"], temperature=0.0, use_cache=False)
    assert torch.equal(ids, uncached)


def test_every_sampling_rule_is_far_from_every_other_in_every_setting():
    """A sample within 0.05 of one rule's distribution names it; rules 0.13 apart cannot be confused (whatever the
    seed's order of the scores: distances do not depend on it)."""
    z = checks._scores(0)
    assert sorted(z.tolist()) == pytest.approx(sorted(checks._BASE_SCORES)) and not torch.equal(z, checks._scores(1))
    for temperature, top_k in checks.SETTINGS:
        rules = {"right": checks._distribution(z, temperature, top_k),
                 **{code: d for code, (d, _) in checks._candidates(z, temperature, top_k).items()}}
        for (a, p), (b, q) in itertools.combinations(rules.items(), 2):
            distance = checks._tv(p, q)
            assert distance < 1e-9 or distance > 0.13, (temperature, top_k, a, b, distance)


def test_right_answers_pass(capsys):
    grading.check_causal_attention(make_causal_attention())
    grading.check_cached_attention(make_causal_attention())
    grading.check_next_token(make_next_token())
    grading.check_generate(make_generate(), tiny_gpt)
    grading.check_generate_sampling(make_generate(), tiny_gpt)
    assert capsys.readouterr().out.count("✓") == 5


def test_a_loop_that_runs_the_model_once_more_after_its_last_token_is_right():
    def generate_one_more(model, prompt, max_new_tokens, temperature=0.0, top_k=None, seed=None):
        out, ids = model(prompt), prompt
        for _ in range(max_new_tokens):
            token = out.logits[:, -1].argmax(-1)
            ids = torch.cat([ids, token[:, None]], dim=1)
            out = model(token[:, None], cache=out.cache)
        return ids

    grading.check_generate(generate_one_more, tiny_gpt, seed=2)


def code_of(check, *args, seed=3):
    with pytest.raises(CheckFailed) as caught:
        check(*args, seed=seed)
    return caught.value.code


@pytest.mark.parametrize("mistake, test1, test2", [
    (dict(mask="none"), "causal-attn.no-mask", "causal-attn.no-mask"),
    (dict(scale=False), "causal-attn.unscaled", "causal-attn.unscaled"),
    (dict(split="reshape"), "causal-attn.split-by-reshape", "causal-attn.split-by-reshape"),
    (dict(mask="square"), None, "kv-cache.mask-not-offset"),
    (dict(cache="after"), None, "kv-cache.past-after"),
    (dict(cache="ignored"), None, "kv-cache.past-ignored"),
    (dict(returned="new"), None, "kv-cache.returns-new-only"),
])
def test_each_attention_mistake_gets_its_own_code(mistake, test1, test2):
    cls = make_causal_attention(**mistake)
    if test1 is None:
        grading.check_causal_attention(cls, seed=3)
    else:
        assert code_of(grading.check_causal_attention, cls) == test1
    assert code_of(grading.check_cached_attention, cls) == test2


@pytest.mark.parametrize("mistake, code", [
    (dict(temperature="multiply"), "sampling.temperature-multiplied"),
    (dict(temperature="ignore"), "sampling.temperature-ignored"),
    (dict(top_k="ignore"), "sampling.top-k-ignored"),
    (dict(top_k="less-equal"), "sampling.top-k-one-too-few"),
    (dict(greedy=True), "sampling.always-greedy"),
])
def test_each_sampling_mistake_gets_its_own_code_under_any_seed(mistake, code):
    for seed in range(3):
        assert code_of(grading.check_next_token, make_next_token(**mistake), seed=seed) == code


@pytest.mark.parametrize("mistake, loop, sampling", [
    (dict(feed="all"), "generate.no-cache", None),
    (dict(feed="all-with-cache"), "generate.whole-sequence-with-cache", "generate.symptom.values"),
    (dict(position=0), "generate.first-position", "generate.symptom.values"),
    (dict(returns="new"), "generate.new-only", "generate.symptom.values"),
    (dict(sample=False), None, "generate.never-samples"),
    (dict(seed_used=False), None, "generate.seed-ignored"),
])
def test_each_loop_mistake_gets_its_own_code(mistake, loop, sampling):
    fn = make_generate(**mistake)
    for check, code in ((grading.check_generate, loop), (grading.check_generate_sampling, sampling)):
        if code is None:
            check(fn, tiny_gpt, seed=3)
        else:
            assert code_of(check, fn, tiny_gpt) == code


def test_shortcuts_through_the_reference_earn_nothing():
    class ViaCoursekit(CausalSelfAttention):
        def forward(self, x, past=None):
            S = x.size(1) + (0 if past is None else past[0].size(2))
            out, cache, _ = super().forward(x, causal_mask(x.size(1), S), None if past is None else LayerCache(*past))
            return out, (cache.k, cache.v)

    def via_course_generate(model, prompt, max_new_tokens, temperature=0.0, top_k=None, seed=None):
        return generate(model, prompt, max_new_tokens, temperature=temperature, top_k=top_k)

    assert code_of(grading.check_causal_attention, ViaCoursekit) == "causal-attn.shortcut"
    assert code_of(grading.check_generate, via_course_generate, tiny_gpt) == "generate.shortcut"


def test_the_sampling_check_does_not_fail_a_right_answer_by_chance():
    for _ in range(20):
        grading.check_next_token(make_next_token())


def test_a_model_that_is_not_a_gpt_is_reported_not_crashed():
    def builds_nothing(vocab_size, max_len):
        return GPT(GPTConfig.tiny(vocab_size + 1, max_len=max_len))  # the wrong vocabulary: weights do not fit

    assert code_of(grading.check_generate, make_generate(), builds_nothing) == "generate.symptom.parameters"
