"""The chapters' self-check quizzes: every quiz block is well formed, and a quiz page scores a reader's answers in
headless Chromium, offline (no request leaves the machine, no console error), with the book's local MathJax.

The browser test builds one small page with the real extension (book/_ext/quiz.py), theme and MathJax, in
seconds; tests/test_book_browser.py answers a question on every built chapter as well.
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "book" / "_ext"))
from quiz import QuizError, _validate  # noqa: E402  (the book's extension, not a package)

QUIZ_BLOCK = re.compile(r"^```\{quiz\}\n(.*?)^```$", flags=re.S | re.M)
CHROMIUM = os.environ.get("COURSE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


def chapter_quizzes() -> dict[str, list[list[dict]]]:
    return {p.stem: [yaml.safe_load(block) for block in QUIZ_BLOCK.findall(p.read_text())]
            for p in sorted((ROOT / "book").glob("*.md"))}


def test_every_chapter_with_a_self_check_has_a_valid_quiz():
    quizzes = chapter_quizzes()
    for chapter, blocks in quizzes.items():
        text = (ROOT / "book" / f"{chapter}.md").read_text()
        if "## Self-check" not in text:
            continue
        assert blocks, f"{chapter}: its self-check has no quiz block"
        for block in blocks:
            _validate(block)
        assert sum(len(b) for b in blocks) >= 3, f"{chapter}: a self-check needs at least three questions"
        assert ":class: dropdown" not in text.split("## Self-check")[1].split("\n## ")[0], \
            f"{chapter}: a self-check answer that only opens on click scores nothing; make it a quiz question"


@pytest.mark.parametrize("broken, message", [
    ("not a list", "YAML list of questions"),
    ([{"question": "Q?", "choices": [{"answer": "a", "why": "w"}, {"answer": "b", "why": "w"}]}], "found 0"),
    ([{"question": "Q?", "choices": [{"answer": "a", "why": "w", "correct": True},
                                     {"answer": "b", "why": "w", "correct": True}]}], "found 2"),
    ([{"question": "Q?", "choices": [{"answer": "a", "correct": True}, {"answer": "b", "why": "w"}]}], "needs `answer:`"),
    ([{"question": "Q?", "choices": [{"answer": "a", "why": "w", "correct": True}]}], "at least two"),
    ([{"choices": []}], "needs `question:`"),
])
def test_a_malformed_quiz_says_what_to_fix(broken, message):
    with pytest.raises(QuizError, match=re.escape(message)):
        _validate(broken)


PAGE = r"""# A chapter

Attention weights $\alpha$ sum to 1.

## Self-check

```{quiz}
- question: What shape are the attention weights for 5 queries over 7 keys of size 64?
  choices:
    - answer: $(7, 5)$
      why: That is the transpose. Each row of the weights belongs to one query.
    - answer: $(5, 7)$
      correct: true
      why: One row per query, one column per key; $d_k = 64$ disappears in the dot product.
    - answer: $(5, 64)$
      why: That is the output's shape when the values have size 64.
- question: Why divide the scores by $\sqrt{d_k}$?
  choices:
    - answer: So that the scores keep a standard deviation near 1 and the softmax does not saturate.
      correct: true
      why: With unit-variance entries, $q \cdot k$ has variance $d_k$.
    - answer: So that the weights sum to 1.
      why: The softmax does that whatever the scale.
```
"""


@pytest.fixture(scope="module")
def quiz_page(tmp_path_factory) -> Path:
    source, out = tmp_path_factory.mktemp("quiz-src"), tmp_path_factory.mktemp("quiz-html")
    (source / "index.md").write_text(PAGE)
    (source / "conf.py").write_text(
        f"import sys\nsys.path.insert(0, {str(ROOT / 'book' / '_ext')!r})\n"
        "extensions = ['myst_parser', 'quiz']\nmyst_enable_extensions = ['dollarmath']\n"
        f"html_theme = 'sphinx_book_theme'\nhtml_context = {{'default_mode': 'light'}}\n"
        f"mathjax_path = 'mathjax/tex-chtml.js'\nhtml_static_path = [{str(ROOT / 'book' / '_vendor')!r}]\n")
    proc = subprocess.run([sys.executable, "-m", "sphinx", "-W", "-q", "-b", "html", str(source), str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out / "index.html"


@pytest.mark.slow
def test_quiz_scores_answers_in_the_browser_offline(quiz_page, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright package")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"needs Chromium at {CHROMIUM} (apt-get install chromium, or set COURSE_CHROMIUM)")
    html = quiz_page.read_text()
    assert not re.search(r'<(?:script|link)[^>]+(?:src|href)="(?:https?:)?//', html), "the page loads from the network"
    outside, errors = [], []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--disable-default-apps"])
        context = browser.new_context(viewport={"width": 1280, "height": 1100}, service_workers="block")
        context.route("**/*", lambda route: route.continue_() if route.request.url.startswith(
            ("file:", "data:", "blob:", "about:")) else (outside.append(route.request.url), route.abort()))
        page = context.new_page()
        page.on("console", lambda message: message.type == "error" and errors.append(message.text))
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(quiz_page.as_uri(), wait_until="load")
        page.wait_for_function("() => Boolean(window.MathJax && MathJax.startup && MathJax.startup.promise)")
        page.evaluate("() => MathJax.startup.promise")

        first, second = page.locator(".cq-question").nth(0), page.locator(".cq-question").nth(1)
        score = page.locator(".cq-score")
        assert first.locator(".cq-button").count() == 3 and second.locator(".cq-button").count() == 2
        assert first.locator(".cq-button mjx-container").count() == 3, "math in the choices is typeset"
        assert not page.locator(".cq-why").first.is_visible(), "explanations stay hidden until a choice is picked"
        assert "Pick an answer" in score.inner_text()

        first.locator(".cq-button").nth(0).click()  # wrong: the transpose
        assert first.locator(".cq-choice").nth(0).locator(".cq-why").is_visible()
        assert not first.locator(".cq-choice").nth(1).locator(".cq-why").is_visible(), "the right answer stays hidden"
        assert "Not quite" in first.locator(".cq-feedback").inner_text()
        assert "0 of 1 answered right on the first try" in score.inner_text()
        first.locator(".cq-button").nth(1).click()  # right, on the second try: no point
        assert "Right" in first.locator(".cq-feedback").inner_text()
        second.locator(".cq-button").nth(0).focus()  # the keyboard works as well as the mouse
        page.keyboard.press("Enter")
        assert "Score: 1 of 2 right on the first try" in score.inner_text()
        page.screenshot(path=str(tmp_path / "quiz.png"), full_page=True)

        again = page.get_by_role("button", name="Start again")
        again.click()
        assert "Pick an answer" in score.inner_text() and not page.locator(".cq-picked").count()
        second.locator(".cq-button").nth(0).click()
        first.locator(".cq-button").nth(1).click()
        assert "Score: 2 of 2 right on the first try" in score.inner_text()
        browser.close()
    assert not outside, f"requests left the machine: {outside}"
    assert not errors, f"console errors: {errors}"
