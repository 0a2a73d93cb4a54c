"""coursekit.gpt: Hugging Face's GPT-2 with its weights copied in gives the same logits (with causal and padding
masks); cached generation equals uncached; sampling obeys temperature and top-k; training learns real text."""

import math
import os

import pytest
import torch

from coursekit.gpt import GPT, GPTConfig, generate, next_token, stream
from coursekit.gpt_train import (
    CharTokenizer,
    load_checkpoint,
    ngram_perplexities,
    perplexity,
    random_windows,
    save_checkpoint,
    TrainSettings,
    train_gpt,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytestmark = pytest.mark.usefixtures("one_thread")


def hf_pair(seed: int, **sizes):
    """A randomly initialised Hugging Face GPT2LMHeadModel and our copy of it, both in eval mode."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(**{**dict(vocab_size=61, n_positions=32, n_embd=48, n_layer=3, n_head=4, resid_pdrop=0.0,
                                  embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0), **sizes})
    hf = GPT2LMHeadModel(config).eval()
    with torch.no_grad():  # non-zero biases and layer norms, so a mis-copied one shows
        for p in hf.parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn_like(p))
    return hf, GPT.from_hf_gpt2(hf)


@pytest.mark.parametrize("seed", [0, 1])
def test_logits_equal_hugging_face_gpt2(seed):
    hf, ours = hf_pair(seed)
    ids = torch.randint(0, 61, (3, 20), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, hf(ids).logits, atol=2e-5, rtol=1e-4)


def test_logits_equal_hugging_face_with_left_padding():
    hf, ours = hf_pair(2)
    ids = torch.randint(0, 61, (3, 16), generator=torch.Generator().manual_seed(2))
    attention_mask = torch.ones(3, 16, dtype=torch.long)
    attention_mask[1, :5] = 0
    attention_mask[2, :11] = 0
    position_ids = (attention_mask.cumsum(1) - 1).clamp_min(0)
    with torch.no_grad():
        theirs = hf(ids, attention_mask=attention_mask, position_ids=position_ids).logits
        mine = ours(ids, key_padding_mask=attention_mask == 0).logits
    real = attention_mask.bool()
    torch.testing.assert_close(mine[real], theirs[real], atol=2e-5, rtol=1e-4)
    # and a padded prompt predicts what the same prompt alone predicts
    with torch.no_grad():
        alone = ours(ids[2:, 11:]).logits
    torch.testing.assert_close(mine[2, 11:], alone[0], atol=1e-5, rtol=1e-4)


def test_gpt2_small_sizes_match_hugging_face():
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPTConfig()
    hf = GPT2LMHeadModel(GPT2Config())
    ours = GPT(config)
    count = lambda m: sum(p.numel() for p in {id(p): p for p in m.parameters()}.values())  # noqa: E731
    assert count(ours) == count(hf) == 124_439_808


def test_causal_no_future_leaks():
    torch.manual_seed(3)
    model = GPT(GPTConfig.tiny(vocab_size=50)).eval()
    ids = torch.randint(0, 50, (2, 12))
    changed = ids.clone()
    changed[:, 7:] = torch.randint(0, 50, (2, 5))
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits[:, :7], model(changed).logits[:, :7])


def test_greedy_generation_equals_hugging_face_generate():
    hf, ours = hf_pair(4)
    prompt = torch.randint(0, 61, (1, 6), generator=torch.Generator().manual_seed(4))
    theirs = hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=15, do_sample=False,
                         pad_token_id=0)
    assert torch.equal(generate(ours, prompt, 15, temperature=0), theirs)


@pytest.mark.parametrize("seed", [5, 6])
def test_cached_generation_equals_uncached(seed):
    torch.manual_seed(seed)
    model = GPT(GPTConfig.tiny(vocab_size=40, max_len=24))
    prompts = torch.randint(0, 40, (3, 9))
    pad = torch.zeros(3, 9, dtype=torch.bool)
    pad[1, :3] = True
    pad[2, :6] = True
    # 30 new tokens run past the 24-token window: both must keep the last 24 tokens alike
    cached = generate(model, prompts, 30, temperature=0, key_padding_mask=pad, use_cache=True)
    uncached = generate(model, prompts, 30, temperature=0, key_padding_mask=pad, use_cache=False)
    assert torch.equal(cached, uncached)
    sampled = [generate(model, prompts, 12, temperature=1.0, top_k=10, key_padding_mask=pad, use_cache=c,
                        generator=torch.Generator().manual_seed(seed)) for c in (True, False)]
    assert torch.equal(*sampled)
    assert model.training  # the mode is restored


def test_cache_logits_equal_full_forward():
    torch.manual_seed(7)
    model = GPT(GPTConfig.tiny(vocab_size=30)).eval()
    ids = torch.randint(0, 30, (2, 14))
    with torch.no_grad():
        full = model(ids).logits
        out = model(ids[:, :5])
        steps = [out.logits]
        for t in range(5, 14):
            out = model(ids[:, t:t + 1], cache=out.cache)
            steps.append(out.logits)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-4)
    assert out.cache.length == 14 and out.cache.next_position.tolist() == [14, 14]


def test_next_token_temperature_and_top_k():
    logits = torch.tensor([[1.0, 3.0, 2.0, -1.0]]).repeat(4000, 1)
    assert next_token(logits[:2], temperature=0).tolist() == [1, 1]
    g = torch.Generator().manual_seed(0)
    top2 = next_token(logits, temperature=1.0, top_k=2, generator=g)
    assert set(top2.tolist()) == {1, 2}
    share = (top2 == 1).float().mean().item()
    assert abs(share - 1 / (1 + math.exp(-1))) < 0.03  # softmax over the two kept logits
    cold = next_token(logits, temperature=0.1, generator=g)
    assert (cold == 1).float().mean() > 0.99
    hot = next_token(logits, temperature=100.0, generator=g)
    assert (hot == 3).float().mean() > 0.2  # nearly uniform: even the worst token comes up
    with pytest.raises(ValueError, match="temperature"):
        next_token(logits, temperature=-1)


def test_stream_yields_one_token_per_step():
    model = GPT(GPTConfig.tiny(vocab_size=20))
    tokens = list(stream(model, torch.zeros(2, 1, dtype=torch.long), 5, temperature=0))
    assert len(tokens) == 5 and all(t.shape == (2,) for t in tokens)


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="divisible by nhead"):
        GPTConfig(vocab_size=10, d_model=30, nhead=4)
    with pytest.raises(ValueError, match="context window"):
        GPT(GPTConfig.tiny(vocab_size=10, max_len=8))(torch.zeros(1, 9, dtype=torch.long))


def test_char_tokenizer_round_trip_and_clear_error():
    tok = CharTokenizer.from_text("To be, or not to be")
    assert tok.decode(tok.encode("be not")) == "be not"
    with pytest.raises(ValueError, match="not in the vocabulary"):
        tok.encode("Q")


def test_ngram_baselines_rank_and_are_exact_on_a_known_text():
    data = torch.tensor([0, 1] * 500)
    ppl = ngram_perplexities(data, data, vocab_size=2, ks=(0.001,))
    assert ppl["unigram"] == pytest.approx(2.0, rel=1e-3)  # two letters, equally often
    assert ppl["bigram"] == pytest.approx(1.0, abs=0.01)  # each letter predicts the next


def test_training_on_shakespeare_beats_the_bigram_and_checkpoint_round_trips(tmp_path):
    from coursekit.corpora import shakespeare

    text = shakespeare()[:300_000]
    tok = CharTokenizer.from_text(text)
    ids = torch.tensor(tok.encode(text))
    train, valid = ids[:270_000], ids[270_000:]
    torch.manual_seed(0)
    model = GPT(GPTConfig.tiny(vocab_size=len(tok), max_len=32, d_model=64))
    settings = TrainSettings(steps=300, batch_size=32, block=32, lr=3e-3, warmup=20, eval_every=150,
                             eval_tokens=10_000)
    history = train_gpt(model, train, valid, settings, device="cpu", progress=False)
    ppl = perplexity(model, valid, 32, device="cpu")
    baselines = ngram_perplexities(train, valid, len(tok), orders=(1, 2))
    assert ppl < baselines["bigram"] * 0.85, (ppl, baselines)
    assert [e["step"] for e in history.epochs] == [150, 300]
    path = save_checkpoint(tmp_path / "gpt.pt", model, tok, history, {"baselines": baselines})
    loaded, tok2, history2, extra = load_checkpoint(path)
    assert tok2.chars == tok.chars and history2.loss == history.loss and extra["baselines"] == baselines
    assert abs(perplexity(loaded, valid, 32, device="cpu") - ppl) / ppl < 1e-2  # fp16 storage costs < 1%


def test_random_windows_shift_by_one():
    data = torch.arange(100)
    x, y = random_windows(data, 10, 4, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (4, 10) and torch.equal(y, x + 1)


def test_language_model_curves_show_training_validation_and_baselines():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from coursekit.train import History
    from coursekit.viz import plot_language_model_curves

    history = History(steps=list(range(1, 101)), loss=[3.0 - 0.01 * i for i in range(100)], lr=[1e-3] * 100,
                      epochs=[{"step": 50, "valid_loss": math.log(9.0)}, {"step": 100, "valid_loss": math.log(7.0)}])
    ax = plot_language_model_curves(history, {"bigram": 12.0}, window=10)
    labels = [line.get_label() for line in ax.get_lines()]
    assert any("training" in label for label in labels) and any("validation" in label for label in labels)
    assert any("bigram" in label for label in labels)
    assert ax.get_title() and ax.get_xlabel() and ax.get_ylabel() and ax.get_yscale() == "log"
    plt.close("all")


def test_the_books_checkpoint_beats_every_ngram_baseline_and_writes_shakespeare(root):
    """The committed checkpoint (made by `python -m coursekit.gpt_train`) is what the GPT chapter shows."""
    from coursekit.gpt_train import shakespeare_data

    model, tok, history, extra = load_checkpoint(root / "book" / "_data" / "gpt_shakespeare.pt")
    _, train, valid = shakespeare_data()
    assert (root / "book" / "_data" / "gpt_shakespeare.pt").stat().st_size < 5e6
    ppl = perplexity(model, valid[:30_001], device="cpu")
    baselines = ngram_perplexities(train, valid[:30_001], len(tok))
    assert ppl < 0.8 * baselines["trigram"] < baselines["bigram"] < baselines["unigram"], (ppl, baselines)
    assert abs(ppl - extra["valid_perplexity"]) / extra["valid_perplexity"] < 0.15  # a slice of the same text
    sample = tok.decode(generate(model, torch.tensor([tok.encode("  Ham. ")]), 200, temperature=0.8, top_k=10,
                                 generator=torch.Generator().manual_seed(0))[0])
    common = {"the", "and", "to", "of", "i", "my", "you", "that", "a", "in", "is", "not", "me", "it", "with"}
    words = [w.strip(".,;:!?'-").lower() for w in sample.split()]
    assert sum(w in common for w in words) >= 5, sample  # real words come out, not noise
