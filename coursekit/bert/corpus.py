"""Real English text for BERT, offline, as documents of sentences: a dictionary and the standard library's docs.

- :func:`wordnet_documents`: WordNet 3.0 (from :mod:`coursekit.corpora`) as a dictionary of families: each
  :class:`Document` is the entries of the kinds of one thing (a synset's hyponyms, an adjective's cluster), each
  entry ``"words: definition"`` followed by its usage examples. The book pretrains BERT on it.
- :func:`stdlib_documents`: the standard library's docstrings, read with :mod:`ast` (nothing is imported or
  downloaded), as :class:`Document` s (a module, or a class with its methods) of sentences.
- :func:`docstring_sentences`: the prose sentences of one docstring.
- :func:`split_documents`: whole documents into training and held-out sets.

Book: chapter "BERT".
"""

from __future__ import annotations

import ast
import os
import random
import re
import sysconfig
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NamedTuple


class Document(NamedTuple):
    """One document, a list of consecutive sentences: a module or a class of the standard library, a family of
    WordNet entries."""

    name: str  # dotted, e.g. "email.message.Message", or "n.bit" for WordNet
    sentences: list[str]

    @property
    def package(self) -> str:
        """The top-level package or module, e.g. "email" (for WordNet, the part of speech)."""
        return self.name.split(".")[0]


def wordnet_entry(words: Sequence[str], definition: str) -> str:
    """One dictionary entry as the book prints it: ``"drill bit, drilling bit: a bit used in drilling for oil"``."""
    return f"{', '.join(words)}: {definition}"


def wordnet_documents(min_sentences: int = 1, deduplicate: bool = True) -> list[Document]:
    """WordNet 3.0 as documents of consecutive sentences, for next sentence prediction.

    A document is a family of entries in the lexicographers' order: the kinds of one noun or verb (the synsets
    whose first hypernym is the same), or one adjective with its satellites (*stable*: *firm, steady*;
    *lasting* ...) and the adverbs made from them. Each entry is a sentence ``"words: definition"``
    (:func:`wordnet_entry`), followed by its usage examples, one sentence each. About 29,000 documents,
    166,000 sentences and 1.6 million words, read in a few seconds; nothing is downloaded.

    Args:
        min_sentences: drop documents with fewer sentences. The default keeps one-entry families too: they
            cannot give an IsNext pair, but they are text for the masked LM and for NotNext halves.
        deduplicate: keep only the first occurrence of a sentence repeated elsewhere (an example used for two
            senses), so a held-out document never repeats a training sentence.

    Returns:
        Documents in WordNet's order (nouns, verbs, adjectives, adverbs), named ``"<pos>.<head word>"``
        after the synset the family hangs from, e.g. ``"n.bit"`` for the kinds of drill bit.
    """
    from coursekit.corpora import WORDNET_FILES, wordnet_synsets

    family_of: dict[tuple[str, int], tuple[str, int]] = {}
    families: dict[tuple[str, int], list[str]] = {}
    for part in WORDNET_FILES:
        for synset in wordnet_synsets(part):
            pos = "a" if synset.pos == "s" else synset.pos  # satellites live with their head adjective
            family = (pos, synset.offset)
            for symbol, offset, target in synset.pointers:
                if synset.pos in "nv" and symbol in ("@", "@i"):  # (instance) hypernym: its kinds are siblings
                    family = (target, offset)
                    break
                if synset.pos == "s" and symbol == "&":  # satellite -> head adjective
                    family = ("a", offset)
                    break
                if synset.pos == "r" and symbol == "\\" and target in "as":  # adverb -> adjective it comes from
                    family = family_of.get(("a", offset), family)
                    break
            family_of[(pos, synset.offset)] = family
            families.setdefault(family, []).extend([wordnet_entry(synset.words, synset.definition), *synset.examples])
    heads = {(("a" if s.pos == "s" else s.pos), s.offset): s.words[0] for part in WORDNET_FILES
             for s in wordnet_synsets(part)}
    documents = [Document(f"{pos}.{heads[(pos, offset)]}", sentences) for (pos, offset), sentences in families.items()]
    if deduplicate:
        documents = _first_occurrences(documents)
    return [d for d in documents if len(d.sentences) >= min_sentences]


_SKIP_DIRS = frozenset({"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__",
                        "encodings", "turtledemo", "pydoc_data"})
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z(\"'`])")


def docstring_sentences(docstring: str | None, min_words: int = 4, max_words: int = 60) -> list[str]:
    """Prose sentences of one docstring: paragraphs of code, doctests and indented tables are dropped, lines
    joined, and the text split after ``.``, ``!`` or ``?`` before a capital; sentences that are mostly symbols,
    too short or too long are dropped.
    """
    sentences = []
    for paragraph in re.split(r"\n\s*\n", docstring or ""):
        lines = [line for line in paragraph.splitlines() if line.strip()]
        if not lines or any(line.lstrip().startswith((">>>", "...", "$ ", "%")) for line in lines):
            continue
        if min(len(line) - len(line.lstrip()) for line in lines) >= 4:  # a code block or a parameter table
            continue
        text = " ".join(line.strip() for line in lines)
        for sentence in _SENTENCE_END.split(text.removesuffix("::")):
            sentence = sentence.strip()
            n_words = len(sentence.split())
            letters = sum(ch.isalpha() or ch == " " for ch in sentence)
            if (min_words <= n_words <= max_words and sentence[0].isupper() and sentence[-1] in ".!?"
                    and letters >= 0.85 * len(sentence)):
                sentences.append(sentence)
    return sentences


def stdlib_documents(packages: Iterable[str] | None = None, root: str | Path | None = None,
                     min_sentences: int = 2, deduplicate: bool = True) -> list[Document]:
    """The standard library's docstrings as documents of sentences, read with :mod:`ast` (nothing is imported).

    A module's document is its docstring followed by its top-level functions'; each class is a document of
    its own (class docstring, then its methods'). Test suites, codecs and demos are skipped. With Python 3.11,
    about 1,100 documents, 13k distinct sentences and 175k words, in a few seconds.

    Args:
        packages: only these top-level packages/modules (e.g. ``["email", "json"]``); all if None.
        root: the library directory; defaults to this interpreter's (``sysconfig``'s "stdlib").
        min_sentences: drop documents with fewer sentences (a next sentence needs two).
        deduplicate: keep only the first occurrence of a sentence repeated elsewhere (about 8% are, e.g.
            "This method is deprecated."), so a held-out document never repeats a training sentence.

    Returns:
        Documents in a fixed order (sorted paths, then source order).
    """
    root = Path(root or sysconfig.get_paths()["stdlib"])
    wanted = set(packages) if packages is not None else None
    documents = []
    for path in _python_files(root):
        parts = path.relative_to(root).with_suffix("").parts
        if wanted is not None and parts[0] not in wanted:
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        module_sentences = docstring_sentences(ast.get_docstring(tree))
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                module_sentences += docstring_sentences(ast.get_docstring(node))
            elif isinstance(node, ast.ClassDef):
                sentences = docstring_sentences(ast.get_docstring(node))
                for member in node.body:
                    if isinstance(member, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        sentences += docstring_sentences(ast.get_docstring(member))
                documents.append(Document(f"{module}.{node.name}", sentences))
        documents.append(Document(module, module_sentences))
    if deduplicate:
        documents = _first_occurrences(documents)
    return [d for d in documents if len(d.sentences) >= min_sentences]


def _first_occurrences(documents: list[Document]) -> list[Document]:
    """The documents with every sentence already seen in an earlier one (or earlier in the same) removed."""
    seen: set[str] = set()
    kept = []
    for d in documents:
        fresh = []
        for sentence in d.sentences:
            if sentence not in seen:
                seen.add(sentence)
                fresh.append(sentence)
        kept.append(Document(d.name, fresh))
    return kept


def _python_files(root: Path) -> list[Path]:
    """Every ``.py`` file under ``root`` in sorted order, not descending into :data:`_SKIP_DIRS`."""
    files = []
    for directory, subdirs, names in os.walk(root):
        subdirs[:] = sorted(d for d in subdirs if d not in _SKIP_DIRS)
        files += [Path(directory, n) for n in sorted(names) if n.endswith(".py")]
    return sorted(files)


def split_documents(documents: Sequence[Document], valid_fraction: float = 0.1,
                    seed: int = 0) -> tuple[list[Document], list[Document]]:
    """Shuffle whole documents into (train, held-out), so no held-out sentence is seen in pretraining."""
    if not 0.0 < valid_fraction < 1.0:
        raise ValueError(f"valid_fraction must be in (0, 1), got {valid_fraction}")
    order = list(range(len(documents)))
    random.Random(seed).shuffle(order)
    n_valid = max(1, round(valid_fraction * len(documents)))
    return [documents[i] for i in order[n_valid:]], [documents[i] for i in order[:n_valid]]
