"""The book builds offline with no warnings, and the built pages hold what a reader needs."""

import functools
import html
import inspect
import re
import subprocess
from pathlib import Path

import pytest

import coursekit.arc
import coursekit.attention
import coursekit.bert
import coursekit.bert.pretraining_data
import coursekit.classifier
import coursekit.decoding
import coursekit.gpt
import coursekit.positional
import coursekit.seq2seq
import coursekit.train
import coursekit.transformer
import coursekit.transformer_layers
from tests.conftest import ROOT, finish_book_build

pytestmark = pytest.mark.slow
HTML = ROOT / "_build" / "html"


@functools.cache
def build_book() -> subprocess.CompletedProcess:
    """Build once per test session (the browser tests share it); unchanged chapters come from the cache. The build
    started in the background when the session was collected (tests/conftest.py); this waits for it."""
    return finish_book_build()


@pytest.fixture(scope="module")
def built_book() -> Path:
    """Build the book exactly as the README does; warnings are errors (-W), references are checked (-n)."""
    proc = build_book()
    reports = "\n".join(p.read_text() for p in (HTML / "reports").rglob("*.log")) if (HTML / "reports").exists() else ""
    assert proc.returncode == 0, f"book build failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}\n{reports}"
    return HTML


def chapters() -> list[str]:
    toc = (ROOT / "_toc.yml").read_text()
    return re.findall(r"^\s*(?:root|- file):\s*(\S+)", toc, flags=re.M)


def visible_text(page: str) -> str:
    """What a reader sees: tags (and so highlighting spans) removed, entities decoded."""
    return html.unescape(re.sub(r"<[^>]+>", "", page))


# What each chapter must show: coursekit's real source (these objects), numbered equations (their labels),
# at least this many figures, and the graded notebook it sends the reader to.
CHAPTERS = {
    "seq2seq_rnn": dict(
        source=[coursekit.arc.arc_task, coursekit.arc.Budget,
                coursekit.seq2seq.RNNEncoderDecoder.encode, coursekit.seq2seq.RNNEncoderDecoder._decode,
                coursekit.train.train_step, coursekit.train.teacher_forced_loss, coursekit.train.sequence_loss,
                coursekit.decoding.greedy_decode],
        equations=["eq-rnn-encoder", "eq-rnn-decoder", "eq-seq-loss"], figures=2,
        notebook="exercises/bahdanau/bahdanau.ipynb"),
    "bahdanau_attention": dict(
        source=[coursekit.attention.AdditiveAttention, coursekit.seq2seq.BahdanauEncoderDecoder._step,
                coursekit.seq2seq.BahdanauEncoderDecoder.encode],
        equations=["eq-bahdanau-score", "eq-bahdanau-weights", "eq-bahdanau-context", "eq-bahdanau-decoder"],
        figures=2, notebook="exercises/bahdanau/bahdanau.ipynb"),
    "queries_keys_values": dict(
        source=[coursekit.attention.ScoredAttention.forward, coursekit.attention.AdditiveAttention.score,
                coursekit.attention.DotProductAttention.score, coursekit.attention.GeneralAttention.score],
        equations=["eq-attention-general", "eq-score-additive", "eq-score-dot", "eq-score-scaled-dot",
                   "eq-score-general"],
        figures=1, notebook="exercises/sdpa/sdpa.ipynb"),
    "scaled_dot_product_attention": dict(
        source=[coursekit.attention.scaled_dot_product_attention, coursekit.attention.attend],
        equations=["eq-sdpa", "eq-softmax-weights", "eq-masked-attention"], figures=3,
        notebook="exercises/sdpa/sdpa.ipynb"),
    "self_attention": dict(
        source=[coursekit.seq2seq.SelfAttentiveRNNEncoderDecoder.encode],
        equations=["eq-self-attention"], figures=4,
        notebook="exercises/rnn_self_attention/rnn_self_attention.ipynb"),
    "multi_head_attention": dict(
        source=[coursekit.attention.MultiHeadAttention.forward, coursekit.attention.MultiHeadAttention.attend_heads,
                coursekit.attention.MultiHeadAttention._split_heads, coursekit.attention.MultiHeadAttention._merge_heads],
        equations=["eq-multihead"], figures=2, notebook="exercises/multihead/multihead.ipynb"),
    "attention_without_rnn": dict(
        source=[coursekit.positional.sinusoidal_table, coursekit.positional.LearnedPositionalEncoding,
                coursekit.seq2seq.AttentionOnlyEncoderDecoder.encode],
        equations=["eq-permutation-equivariance", "eq-sinusoidal", "eq-sinusoidal-rotation"], figures=3,
        notebook="exercises/attention_without_rnn/attention_without_rnn.ipynb"),
    "transformer": dict(
        source=[coursekit.transformer_layers.TransformerEncoderLayer._layer,
                coursekit.transformer_layers.TransformerDecoderLayer.run, coursekit.transformer.Transformer._embed,
                coursekit.transformer.transformer_lr, coursekit.train.sequence_loss, coursekit.train.train_step,
                coursekit.train.teacher_forced_loss, coursekit.decoding.beam_search],
        equations=["eq-ffn", "eq-residual-layernorm", "eq-transformer-lr"], figures=6,
        notebook="exercises/transformer/transformer.ipynb"),
    "bert": dict(
        source=[coursekit.bert.BertEmbeddings.forward, coursekit.bert.pretraining_data.mask_tokens,
                coursekit.bert.BertForPreTraining.compute_loss, coursekit.bert.BertForSequenceClassification.forward],
        equations=["eq-bert-input", "eq-mlm-loss", "eq-nsp-loss", "eq-bert-loss", "eq-bert-finetune"], figures=2,
        notebook="exercises/bert/bert.ipynb"),
    "classifier": dict(
        source=[coursekit.classifier.TransformerClassifier.encode, coursekit.classifier.TransformerClassifier.pool,
                coursekit.classifier.classification_loss],
        equations=["eq-classifier"], figures=3, notebook=None),
    "gpt": dict(
        source=[coursekit.gpt.CausalSelfAttention.forward, coursekit.gpt.GPTBlock.forward, coursekit.gpt.GPT.forward,
                coursekit.gpt.next_token, coursekit.gpt.stream],
        equations=["eq-perplexity", "eq-gpt-block"], figures=2, notebook=None),
    "where_next": dict(source=[], equations=[], figures=0, notebook=None),
}


def test_every_toc_entry_has_a_page(built_book):
    for entry in chapters():
        assert (built_book / f"{entry}.html").exists(), f"{entry} has no page in the build"


def test_every_chapter_is_in_the_toc_and_checked_here():
    listed = {Path(entry).name for entry in chapters()}
    assert set(CHAPTERS) <= listed, f"chapters missing from _toc.yml: {set(CHAPTERS) - listed}"
    unchecked = {p.stem for p in (ROOT / "book").glob("*.md")} - set(CHAPTERS) - {"intro", "instructors", "references"}
    assert not unchecked, f"chapters without an entry in CHAPTERS: {unchecked}"


@pytest.mark.parametrize("name", sorted(CHAPTERS))
def test_chapter_shows_source_figures_math_quiz_and_notebook(built_book, name):
    expected = CHAPTERS[name]
    page = (built_book / "book" / f"{name}.html").read_text()
    text = visible_text(page)
    for obj in expected["source"]:
        lines = [line.strip() for line in inspect.getsource(obj).splitlines() if line.strip()]
        first = next(line for line in lines if line.startswith(("def ", "class ")))
        assert first in text and lines[-1] in text, \
            f"{name} must show coursekit's real, current source of {obj.__qualname__}"
    images = re.findall(r'<img[^>]+src="([^"]+)"', page)
    assert len(images) >= expected["figures"], f"{name}: expected {expected['figures']} figures, found {images}"
    for src in images:
        assert (built_book / "book" / src).resolve().exists(), f"{name}: broken image {src}"
    captions = re.findall(r'<figcaption>', page)
    assert len(captions) >= expected["figures"], f"{name}: every figure needs a numbered caption"
    for label in expected["equations"]:
        assert f'id="equation-{label}"' in page, f"{name}: equation {label} must be numbered and referenceable"
    assert "output traceback" not in page and "output stderr" not in page, f"{name}: a reader would see an error"
    quiz = re.findall(r'<div class="cq-question\b', page)
    assert len(quiz) >= 3, f"{name} needs a self-check quiz of at least three questions"
    assert "_static/quiz/quiz.js" in page, f"{name}: its quiz must load the script that scores it"
    assert "Self-check" in text
    if expected["notebook"]:
        assert expected["notebook"] in text, f"{name} must send the reader to {expected['notebook']}"


def test_pages_load_nothing_from_the_network(built_book):
    external = re.compile(r'<(?:script|link|img)[^>]+(?:src|href)="(https?:)?//', re.I)
    for page in built_book.rglob("*.html"):
        text = page.read_text()
        assert not external.search(text), f"{page.relative_to(built_book)} loads a resource from the network"
        assert "unpkg.com" not in text and "cdn.jsdelivr" not in text
    assert (built_book / "_static" / "mathjax" / "tex-chtml.js").exists(), "local MathJax missing from the build"
    assert (built_book / "_static" / "mathjax" / "output" / "chtml" / "fonts" / "woff-v2" / "MathJax_Main-Regular.woff").exists()


def test_every_cited_paper_is_in_the_bibliography(built_book):
    bib = (ROOT / "book" / "references.bib").read_text()
    keys = set(re.findall(r"^@\w+\{([^,]+),", bib, flags=re.M))
    cited = set()
    for chapter in (ROOT / "book").glob("*.md"):
        for group in re.findall(r"\{cite:[pt]\}`([^`]+)`", chapter.read_text()):
            cited.update(key.strip() for key in group.split(","))
    assert cited <= keys, f"cited but not in references.bib: {cited - keys}"
    references = visible_text((built_book / "book" / "references.html").read_text()).lower()
    for title in ("Neural Machine Translation by Jointly Learning to Align and Translate", "Attention Is All You Need",
                  "Pre-training of Deep Bidirectional Transformers"):
        assert title.lower() in references, f"{title!r} is missing from the references page"


def test_the_arc_in_the_book_is_the_run_the_build_made(built_book, monkeypatch):
    """Every number of the introduction's tables comes from the run this build stored under _build/arc, which every
    chapter reads: load it (training again is not allowed here) and find each number on the page."""
    import coursekit.arc as arc

    def no_training(*args, **kwargs):
        raise AssertionError("the build left no complete run of the arc under _build/arc")

    monkeypatch.setattr(arc, "train_run", no_training)
    keys = ["baseline", "stage1", "stage2", "stage3", "stage3-none", "stage4"]
    rows = arc.arc_rows(arc.run_arc(keys, directory=ROOT / "_build" / "arc"),
                        arc.measure_timings(directory=ROOT / "_build" / "arc"))
    page = (built_book / "book" / "intro.html").read_text()
    text = visible_text(page)
    assert 'id="fig-arc"' in page
    for row in rows:
        assert row["label"] in text
        numbers = [f"{row['exact_match']:.1%}", *(f"{v:.1%}" for v in row["exact_by_band"].values()),
                   f"{row['parameters']:,}", f"{row['cpu_seconds_per_epoch']:.1f}",
                   *(f"{1000 * s:.0f}" for s in row["step_seconds"].values())]
        missing = [n for n in numbers if n not in text]
        assert not missing, f"{row['label']}: {missing} are not on the introduction's page"
