"""The book's source reads well without building it: the code a chapter shows fits the reading column, and the
chapters coursekit's docstrings send readers to exist. (tests/test_book_browser.py checks the built pages at 1280 px:
nothing in an article scrolls sideways.)"""

import ast
import re
import textwrap
from pathlib import Path

import pytest

from tests.conftest import ROOT

# book/_vendor/course.css gives code about 98 characters at 1280 px; two are kept in reserve.
COLUMN = 96
CHAPTERS = sorted((ROOT / "book").glob("*.md"))


def _fenced_blocks(text: str):
    """(info string, first line number, body) of every fenced block, directives included, nested ones too."""
    lines, open_blocks = text.split("\n"), []
    for number, line in enumerate(lines, start=1):
        fence = re.match(r"^(`{3,})(.*)$", line)
        if fence and open_blocks and fence.group(1) == open_blocks[-1][0] and not fence.group(2).strip():
            ticks, info, start = open_blocks.pop()
            yield info, start + 1, "\n".join(lines[start:number - 1])
        elif fence and fence.group(2).strip():
            open_blocks.append((fence.group(1), fence.group(2).strip(), number))


def _code_cells(text: str):
    """(first line number, body) of every code cell and fenced code block (```python, ```bash, ...), hidden cells,
    cell options and directives (math, admonitions, listings) left out."""
    for info, start, body in _fenced_blocks(text):
        if not (info.startswith("{code-cell}") or re.fullmatch(r"[a-z]+", info)):
            continue
        if body.startswith("---\n"):  # a YAML header (figure captions): not code
            body = body.split("\n---\n", 1)[1] if "\n---\n" in body else ""
        if re.match(r":tags: \[[^\]]*remove-(cell|input)", body):
            continue
        body = re.sub(r"^(:\w[\w-]*:.*\n)+", "", body)  # short-form cell options
        yield start, body


def _shown_source(md: Path):
    """(where, lines) of every object a chapter shows with ``literalinclude :pyobject:``, as the reader sees it."""
    text = md.read_text()
    for match in re.finditer(r"```\{literalinclude\} ([^\n]+)\n((?::[^\n]+\n)*)", text):
        path = (md.parent / match.group(1).strip()).resolve()
        options = dict(re.findall(r":(\w[\w-]*):[ \t]*(.*)", match.group(2)))
        if "pyobject" not in options:
            continue
        node = _find(ast.parse(path.read_text()), options["pyobject"])
        first = node.decorator_list[0].lineno if node.decorator_list else node.lineno
        lines = path.read_text().splitlines()[first - 1: node.end_lineno]
        if "start-at" in options:
            lines = lines[next(i for i, line in enumerate(lines) if options["start-at"] in line):]
        if "dedent" in options:
            lines = textwrap.dedent("\n".join(lines)).splitlines()
        yield f"{path.relative_to(ROOT)}:{first} ({options['pyobject']})", lines


def _find(tree: ast.AST, qualname: str) -> ast.AST:
    node = tree
    for part in qualname.split("."):
        node = next(n for n in node.body if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name == part)
    return node


@pytest.mark.parametrize("md", CHAPTERS, ids=lambda p: p.stem)
def test_code_cells_fit_the_reading_column(md):
    too_long = [f"line {start + i}: {len(line)} characters" for start, body in _code_cells(md.read_text())
                for i, line in enumerate(body.splitlines()) if len(line) > COLUMN]
    assert not too_long, f"{md.name}: code a reader would scroll sideways to read (max {COLUMN}): {too_long}"


@pytest.mark.parametrize("md", CHAPTERS, ids=lambda p: p.stem)
def test_shown_source_fits_the_reading_column(md):
    too_long = [f"{where}: {len(line)} characters: {line.strip()[:40]}..." for where, lines in _shown_source(md)
                for line in lines if len(line) > COLUMN]
    assert not too_long, f"{md.name} shows lines longer than {COLUMN} characters: {too_long}"


def test_the_checks_above_see_the_code():
    """They find every chapter's cells and listings, so a long line cannot hide from them."""
    cells = sum(1 for md in CHAPTERS for _ in _code_cells(md.read_text()))
    listings = sum(1 for md in CHAPTERS for _ in _shown_source(md))
    assert cells > 100 and listings > 30, (cells, listings)


def chapter_titles() -> set[str]:
    """Every chapter's title, and its part before a colon ("GPT" for "GPT: a decoder that writes")."""
    titles = set()
    for md in CHAPTERS:
        found = re.search(r"^# (.+)$", md.read_text(), flags=re.M)
        if found:
            titles |= {found.group(1).strip(), found.group(1).split(":")[0].strip()}
    return titles


def test_docstrings_cite_chapters_that_exist():
    titles = chapter_titles()
    cited: dict[str, list[str]] = {}
    for path in (ROOT / "coursekit").rglob("*.py"):
        for paragraph in re.findall(r"^Book: chapters? (.*?)(?:\n\s*\n|\n\"\"\")", path.read_text(), flags=re.S | re.M):
            for name in re.findall(r'"([^"]+)"', paragraph):
                cited.setdefault(name, []).append(str(path.relative_to(ROOT)))
    assert len(cited) >= 8, cited
    missing = {name: where for name, where in cited.items() if name not in titles}
    assert not missing, f"docstrings cite chapters the book does not have: {missing}; titles: {sorted(titles)}"


@pytest.mark.parametrize("md", CHAPTERS, ids=lambda p: p.stem)
def test_every_chapter_reads_as_a_notebook(md):
    """What the book build does first, in a second instead of minutes: a caption with ": " in it, for one, is
    invalid YAML and stops the whole build."""
    from myst_nb.core.read import read_myst_markdown_notebook

    text = md.read_text()
    if text.startswith("---\njupytext:"):
        read_myst_markdown_notebook(text, path=str(md))


# ----- one numbering: a baseline and stages 1-4, the lecture notes' -------------------------------------------------

ARC_CHAPTERS = {"seq2seq_rnn": "baseline", "bahdanau_attention": "stage 1", "self_attention": "stage 2",
                "attention_without_rnn": "stage 3", "transformer": "stage 4"}


@pytest.mark.parametrize(("chapter", "stage"), sorted(ARC_CHAPTERS.items()))
def test_each_arc_chapter_says_which_stage_it_is_before_its_first_section(chapter, stage):
    text = (ROOT / "book" / f"{chapter}.md").read_text()
    opening = text.split("\n## ", 1)[0].lower()
    assert f"**{stage}**" in opening, f"{chapter} should name itself the {stage} of the arc in its opening"


def test_no_other_numbering_of_the_arc():
    """Stages run 1-4 after the baseline everywhere: the book, coursekit's docstrings, the notebooks."""
    wrong = re.compile(r"\b(first|second|third|fourth|fifth|sixth) stage\b|\bstage [05-9]\b"
                       r"|\bstage [02-4]\W{1,3}(Bahdanau|RNN encoder-decoder|plain RNN)", flags=re.I)
    files = [*CHAPTERS, *(ROOT / "coursekit").rglob("*.py"), *(ROOT / "solutions").rglob("*.ipynb"),
             *(ROOT / "benchmarks").glob("*.py"), ROOT / "README.md"]
    found = [f"{path.relative_to(ROOT)}: {m.group(0)}" for path in files for m in wrong.finditer(path.read_text())]
    assert not found, f"another numbering of the arc: {found}"
    intro = (ROOT / "book" / "intro.md").read_text()
    for stage in ("Baseline", "Stage 1", "Stage 2", "Stage 3", "Stage 4"):
        assert f"| {stage} |" in intro, f"the introduction's table of the arc lacks {stage}"
