"""coursekit.data: date and number-word pairs, vocabularies, splits and padded batches."""

import re
from collections import Counter
from datetime import date, timedelta

import pytest
import torch
from babel.dates import format_date
from num2words import num2words

from coursekit.data import (
    DATE_FORMATS,
    DATE_LANGUAGES,
    Seq2SeqBatch,
    TranslationDataset,
    Vocab,
    char_tokens,
    collate_pairs,
    date_task,
    make_date_pairs,
    make_loader,
    make_number_pairs,
    number_task,
    number_words,
    split_pairs,
)

# --------------------------------------------------------------------------------------------------
# Dates
# --------------------------------------------------------------------------------------------------


def test_date_pairs_are_deterministic_by_seed():
    assert make_date_pairs(300, seed=7) == make_date_pairs(300, seed=7)
    assert make_date_pairs(300, seed=7) != make_date_pairs(300, seed=8)
    assert len(make_date_pairs(0)) == 0


def test_iso_targets_are_the_date_written_in_the_source_and_every_format_appears():
    pairs = make_date_pairs(1500, seed=1)
    seen = Counter()
    for human, iso in pairs:
        day = date.fromisoformat(iso)
        assert day.isoformat() == iso and date(1950, 1, 1) <= day <= date(2049, 12, 31)
        # Written independently of the generator: babel accepts style names and patterns alike.
        matches = [(lang, fmt) for lang in DATE_LANGUAGES for fmt in DATE_FORMATS[lang]
                   if format_date(day, fmt, locale=lang) == human]  # fmt: skip
        assert matches, f"{human!r} is not any supported rendering of {iso}"
        seen.update(matches)
    every_format = {(lang, fmt) for lang in DATE_LANGUAGES for fmt in DATE_FORMATS[lang]}
    assert set(seen) == every_format, f"never generated: {every_format - set(seen)}"


def test_every_human_date_names_exactly_one_day():
    # Day-first vs month-first numeric formats ("1/2/50") would collide here; so would a 'yy' over 100+ years.
    owner: dict[str, date] = {}
    for year in (1950, 1999, 2000, 2049):
        for offset in range(365):
            day = date(year, 1, 1) + timedelta(days=offset)
            for lang in DATE_LANGUAGES:
                for fmt in DATE_FORMATS[lang]:
                    human = format_date(day, fmt, locale=lang)
                    assert owner.setdefault(human, day) == day, f"{human!r} means {owner[human]} and {day}"


def test_languages_can_be_chosen_and_all_appear():
    french = make_date_pairs(200, languages=("fr",))
    assert any("janv." in h or "janvier" in h for h, _ in make_date_pairs(2000, languages=("fr",)))
    assert not any(re.search(r"January|Januar\b|enero", h) for h, _ in french)
    mixed = " ".join(h for h, _ in make_date_pairs(3000, seed=3))
    for month_name in ("December", "décembre", "Dezember", "diciembre"):
        assert month_name in mixed


def test_two_digit_years_only_over_a_range_of_at_most_100_years():
    two_digit_year = re.compile(r"^\d{1,2}[./]\d{1,2}[./]\d{2}$")  # "02.01.50", "2/1/50"
    assert any(two_digit_year.match(h) for h, _ in make_date_pairs(500))
    wide = make_date_pairs(500, start=date(1900, 1, 1), end=date(2099, 12, 31))
    assert not any(two_digit_year.match(h) for h, _ in wide)
    assert min(iso for _, iso in wide) < "1950" and max(iso for _, iso in wide) > "2050"


def test_date_inputs_are_checked():
    with pytest.raises(ValueError, match="unknown date language 'it'; supported: en, fr, de, es"):
        make_date_pairs(5, languages=("en", "it"))
    with pytest.raises(TypeError, match="not the string 'fr'"):
        make_date_pairs(5, languages="fr")
    with pytest.raises(ValueError, match="is after end"):
        make_date_pairs(5, start=date(2000, 1, 2), end=date(2000, 1, 1))


def test_char_tokens():
    assert char_tokens("2 ene") == ["2", " ", "e", "n", "e"]
    with pytest.raises(TypeError):
        char_tokens(["2"])


# --------------------------------------------------------------------------------------------------
# Number words
# --------------------------------------------------------------------------------------------------

GERMAN_LEXICON = {
    "null", "ein", "eins", "zwei", "drei", "vier", "fünf", "sechs", "sieben", "acht", "neun",
    "zehn", "elf", "zwölf", "dreizehn", "vierzehn", "fünfzehn", "sechzehn", "siebzehn", "achtzehn", "neunzehn",
    "zwanzig", "dreißig", "vierzig", "fünfzig", "sechzig", "siebzig", "achtzig", "neunzig",
    "hundert", "tausend", "und",
}  # fmt: skip


def test_german_morphemes_rejoin_to_num2words_for_0_to_9999():
    used = set()
    for n in range(10_000):
        morphemes = number_words(n, "de")
        assert "".join(morphemes) == num2words(n, lang="de"), n
        used.update(morphemes)
    assert used == GERMAN_LEXICON


def test_german_puts_units_before_tens_and_english_does_not():
    assert number_words(42, "en") == ["forty", "two"]
    assert number_words(42, "de") == ["zwei", "und", "vierzig"]
    assert number_words(3442, "de") == ["drei", "tausend", "vier", "hundert", "zwei", "und", "vierzig"]
    assert number_words(3442, "en") == ["three", "thousand", "four", "hundred", "forty", "two"]
    assert number_words(3442, "digits") == ["3", "4", "4", "2"]


def test_number_word_conventions():
    assert number_words(1, "de") == ["eins"]
    assert number_words(21, "de") == ["ein", "und", "zwanzig"]
    assert number_words(101, "de") == ["ein", "hundert", "eins"]
    assert number_words(17, "de") == ["siebzehn"]
    assert number_words(101, "en") == ["one", "hundred", "one"]  # no "and"
    assert number_words(71, "fr") == ["soixante", "et", "onze"]
    assert number_words(97, "fr") == ["quatre", "vingt", "dix", "sept"]
    assert number_words(0, "en") == ["zero"]


def test_number_words_returns_a_fresh_list():
    words = number_words(42, "de")
    words.append("oops")
    assert number_words(42, "de") == ["zwei", "und", "vierzig"]


def test_number_inputs_are_checked():
    with pytest.raises(ValueError, match="unknown number language 'es'; supported: en, fr, de, digits"):
        number_words(3, "es")
    with pytest.raises(ValueError, match="unknown number language 'EN'"):
        make_number_pairs([1], "EN", "de")
    for bad in (-1, 1_000_000, 2.0, True):
        with pytest.raises(ValueError, match="integer in 0..999999"):
            number_words(bad, "en")


def test_make_number_pairs():
    assert make_number_pairs([42, 7], "en", "de") == [
        (["forty", "two"], ["zwei", "und", "vierzig"]),
        (["seven"], ["sieben"]),
    ]
    assert make_number_pairs(range(3), "fr", "digits")[2] == (["deux"], ["2"])


# --------------------------------------------------------------------------------------------------
# Vocabulary
# --------------------------------------------------------------------------------------------------


def test_vocab_special_ids_and_deterministic_order():
    vocab = Vocab.build([["b", "a", "c"], ["c", "b"], ["c"]])
    assert vocab.tokens == ["[PAD]", "[START]", "[STOP]", "[UNK]", "c", "b", "a"]  # count desc, then token
    assert (vocab.pad_id, vocab.start_id, vocab.stop_id, vocab.unk_id) == (0, 1, 2, 3)
    assert len(vocab) == 7 and "a" in vocab and "z" not in vocab
    assert Vocab.build([["c", "b", "a"], ["c", "b"], ["c"]], min_freq=2).tokens[4:] == ["c", "b"]


def test_vocab_encode_decode_round_trip():
    vocab = Vocab.build([list("hello world")])
    ids = vocab.encode(list("low"), add_start=True, add_stop=True)
    assert ids[0] == vocab.start_id and ids[-1] == vocab.stop_id
    assert vocab.decode(ids) == list("low")
    assert vocab.encode(["h", "?"]) == [vocab.encode(["h"])[0], vocab.unk_id]
    # Stops at the first [STOP], drops [PAD]/[START], keeps [UNK]; a tensor row works too.
    h, o = vocab.encode(["h", "o"])
    row = torch.tensor([vocab.start_id, h, vocab.unk_id, vocab.stop_id, o, vocab.pad_id])
    assert vocab.decode(row) == ["h", "[UNK]"]
    assert vocab.decode(row, strip_special=False) == ["[START]", "h", "[UNK]", "[STOP]", "o", "[PAD]"]
    with pytest.raises(IndexError, match="outside this vocabulary"):
        vocab.decode([len(vocab)])


def test_vocab_saves_and_loads():
    vocab = Vocab.build([list("zweiundvierzig")])
    assert Vocab.from_dict(vocab.to_dict()) == vocab
    with pytest.raises(ValueError, match="starts with"):
        Vocab.from_dict({"tokens": ["a", "b"]})
    with pytest.raises(ValueError, match="special token"):
        Vocab(["[PAD]"])


# --------------------------------------------------------------------------------------------------
# Splits
# --------------------------------------------------------------------------------------------------


def test_split_is_deterministic_disjoint_and_deduplicated():
    pairs = make_date_pairs(3000, seed=2)
    pairs = pairs + pairs[:500]  # exact duplicates
    # Sources with two targets each: both pairs must land in the same split.
    pairs += [(f"source {i}", target) for i in range(200) for target in ("a", "b")]
    train, valid, test = split_pairs(pairs, seed=5)
    assert (train, valid, test) == split_pairs(pairs, seed=5)
    assert train != split_pairs(pairs, seed=6)[0]
    sources = [{src for src, _ in split} for split in (train, valid, test)]
    assert not (sources[0] & sources[1] or sources[0] & sources[2] or sources[1] & sources[2])
    everything = train + valid + test
    assert len(everything) == len(set(everything)) == len(set(pairs))
    n_sources = len({src for src, _ in pairs})
    assert abs(len(sources[0]) - 0.8 * n_sources) <= 1 and abs(len(sources[1]) - 0.1 * n_sources) <= 1


def test_split_accepts_token_lists_and_checks_fractions():
    pairs = make_number_pairs(range(50), "en", "digits")
    train, valid, test = split_pairs(pairs, fractions=(0.6, 0.2, 0.2))
    assert (len(train), len(valid), len(test)) == (30, 10, 10)
    assert sorted(map(str, train + valid + test)) == sorted(map(str, pairs))
    with pytest.raises(ValueError, match="summing to 1"):
        split_pairs(pairs, fractions=(0.8, 0.1))
    with pytest.raises(ValueError, match="summing to 1"):
        split_pairs(pairs, fractions=(0.8, 0.3, -0.1))


# --------------------------------------------------------------------------------------------------
# Batches
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def vocabs():
    return Vocab.build([list("abcde")]), Vocab.build([list("xyz")])


def test_collate_pads_and_masks_exactly_the_padding(vocabs):
    src_vocab, tgt_vocab = vocabs
    pairs = [(list("abc"), list("x")), (list("a"), list("xyz")), (list("ed"), [])]
    batch = collate_pairs(pairs, src_vocab, tgt_vocab)
    assert isinstance(batch, Seq2SeqBatch)
    assert batch.src.shape == (3, 3) and batch.tgt_in.shape == batch.tgt_out.shape == (3, 4)
    assert batch.src.dtype == batch.tgt_in.dtype == torch.long
    assert batch.src_lengths.tolist() == [3, 1, 2]
    expected_src_mask = torch.tensor([[False, False, False], [False, True, True], [False, False, True]])
    torch.testing.assert_close(batch.src_key_padding_mask, expected_src_mask)
    torch.testing.assert_close(batch.src_key_padding_mask, batch.src == src_vocab.pad_id)
    expected_tgt_mask = torch.tensor([[0, 0, 1, 1], [0, 0, 0, 0], [0, 1, 1, 1]]).bool()
    torch.testing.assert_close(batch.tgt_key_padding_mask, expected_tgt_mask)
    torch.testing.assert_close(batch.tgt_key_padding_mask, batch.tgt_in == tgt_vocab.pad_id)
    torch.testing.assert_close(batch.tgt_key_padding_mask, batch.tgt_out == tgt_vocab.pad_id)


def test_tgt_in_and_tgt_out_are_shifted_by_one(vocabs):
    src_vocab, tgt_vocab = vocabs
    batch = collate_pairs([(list("ab"), list("xyz")), (list("c"), list("y"))], src_vocab, tgt_vocab)
    x, y, z = tgt_vocab.encode(list("xyz"))
    start, stop, pad = tgt_vocab.start_id, tgt_vocab.stop_id, tgt_vocab.pad_id
    assert batch.tgt_in.tolist() == [[start, x, y, z], [start, y, pad, pad]]
    assert batch.tgt_out.tolist() == [[x, y, z, stop], [y, stop, pad, pad]]
    assert [tgt_vocab.decode(row) for row in batch.tgt_out] == [list("xyz"), ["y"]]


def test_collate_rejects_empty_sources(vocabs):
    with pytest.raises(ValueError, match="empty source"):
        collate_pairs([([], list("x"))], *vocabs)


def test_loader_shuffles_by_seed_and_covers_everything(vocabs):
    pairs = [([c] * (i % 3 + 1), list("xyz")[: i % 3]) for i, c in enumerate("abcdeabcde")]
    dataset = TranslationDataset(pairs, *vocabs)

    def order(seed):
        loader = make_loader(dataset, 4, shuffle=True, seed=seed)
        return [batch.src[:, 0].tolist() + batch.src_lengths.tolist() for batch in loader]

    assert order(0) == order(0)
    assert order(0) != order(1)
    batches = list(make_loader(dataset, 4, shuffle=False))
    assert [b.src.shape[0] for b in batches] == [4, 4, 2]
    assert batches[0].to("cpu").src.equal(batches[0].src)
    with pytest.raises(TypeError, match="tokenize first"):
        TranslationDataset([("abc", "x")], *vocabs)


# --------------------------------------------------------------------------------------------------
# Ready-made tasks
# --------------------------------------------------------------------------------------------------


def test_date_task_builds_vocabs_from_train_and_rarely_meets_unknown_characters():
    task = date_task(n=4000, seed=0)
    assert task.src_vocab == Vocab.build(src for src, _ in task.train)
    assert set(task.tgt_vocab.tokens[4:]) == set("0123456789-")
    held_out = [c for split in (task.valid, task.test) for src, _ in split for c in src]
    unknown = sum(c not in task.src_vocab for c in held_out)
    assert unknown / len(held_out) < 1e-3
    assert task == date_task(n=4000, seed=0)


def test_number_task_splits_a_range():
    task = number_task(0, 1000, "en", "de", seed=1)
    assert len(task.train) + len(task.valid) + len(task.test) == 1000
    assert "vierzig" in task.tgt_vocab and "forty" in task.src_vocab
    assert "Task(train=800, valid=100, test=100" in repr(task)
    with pytest.raises(ValueError, match="lo < hi"):
        number_task(10, 10, "en", "de")
