"""The book builds offline with no warnings, and the built pages hold what a reader needs."""

import html
import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

import coursekit.attention
from coursekit.autograde import nbgrader_env
from tests.conftest import ROOT

pytestmark = pytest.mark.slow
HTML = ROOT / "_build" / "html"


@pytest.fixture(scope="module")
def built_book() -> Path:
    """Build the book exactly as the README does; warnings are errors (-W), references are checked (-n)."""
    jupyter_book = Path(sys.executable).parent / "jupyter-book"
    proc = subprocess.run([str(jupyter_book), "build", "-W", "-n", "--keep-going", str(ROOT)],
                          cwd=ROOT, env=nbgrader_env(), capture_output=True, text=True, timeout=1800)
    reports = "\n".join(p.read_text() for p in (HTML / "reports").rglob("*.log")) if (HTML / "reports").exists() else ""
    assert proc.returncode == 0, f"book build failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}\n{reports}"
    return HTML


def chapters() -> list[str]:
    toc = (ROOT / "_toc.yml").read_text()
    return re.findall(r"^\s*(?:root|- file):\s*(\S+)", toc, flags=re.M)


def test_every_toc_entry_has_a_page(built_book):
    for entry in chapters():
        assert (built_book / f"{entry}.html").exists(), f"{entry} has no page in the build"


def test_chapter_shows_source_figures_and_numbered_math(built_book):
    page = (built_book / "book" / "scaled_dot_product_attention.html").read_text()
    text = html.unescape(re.sub(r"<[^>]+>", "", page))  # what a reader sees, highlighting spans removed
    source = inspect.getsource(coursekit.attention.scaled_dot_product_attention)
    assert source.splitlines()[0] in text and source.splitlines()[-1].strip() in text, \
        "the chapter must show coursekit's real, current source"
    images = re.findall(r'<img[^>]+src="([^"]+)"', page)
    assert len(images) >= 3, f"expected the chapter's figures, found {images}"
    for src in images:
        assert (built_book / "book" / src).resolve().exists(), f"broken image {src}"
    assert 'id="equation-eq-sdpa"' in page, "the attention equation must be numbered and referenceable"
    assert "output traceback" not in page and "output stderr" not in page, "a reader would see an error or warning"


def test_pages_load_nothing_from_the_network(built_book):
    external = re.compile(r'<(?:script|link|img)[^>]+(?:src|href)="(https?:)?//', re.I)
    for page in built_book.rglob("*.html"):
        text = page.read_text()
        assert not external.search(text), f"{page.relative_to(built_book)} loads a resource from the network"
        assert "unpkg.com" not in text and "cdn.jsdelivr" not in text
    assert (built_book / "_static" / "mathjax" / "tex-chtml.js").exists(), "local MathJax missing from the build"
    assert (built_book / "_static" / "mathjax" / "output" / "chtml" / "fonts" / "woff-v2" / "MathJax_Main-Regular.woff").exists()
