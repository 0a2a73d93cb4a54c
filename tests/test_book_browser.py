"""What a reader sees: every built page rendered in headless Chromium.

Checks, per page: the chapter heading, every image loaded (naturalWidth > 0), every formula typeset by the
local MathJax (no raw TeX left on the page, numbered equations), no console errors or uncaught exceptions, a
self-check answer that opens on click, nothing that scrolls sideways at 1280 px (code, outputs, equations,
tables), and not a single request leaving the machine (every non-file request is recorded and blocked).

Needs the Debian package ``chromium`` (``/usr/bin/chromium``, or set ``COURSE_CHROMIUM``) and the Python package
``playwright``, which drives that browser and never downloads one. Set ``COURSE_SCREENSHOTS=<dir>`` to keep a
full-page screenshot of every page.
"""

import os
import re
import shutil
from pathlib import Path

import pytest

from tests.test_book import built_book, chapters  # noqa: F401  (built_book is a fixture: one shared build)
from tests.conftest import ROOT

pytestmark = pytest.mark.slow

CHROMIUM = os.environ.get("COURSE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
sync_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright package (pip install playwright)")
if not Path(CHROMIUM).exists():
    pytest.skip(f"needs Chromium at {CHROMIUM} (Debian/Ubuntu: apt-get install chromium; or set COURSE_CHROMIUM)",
                allow_module_level=True)

# Raw TeX a reader must never see outside code blocks (MathJax replaces every formula it typesets).
RAW_TEX = re.compile(r"\\(frac|mathrm|sqrt|sum|alpha|begin\{|left|right|top|text\{|mathbb)|\$\$")


def page_titles() -> dict[str, str]:
    """Each TOC entry's page and its first-level heading in the source."""
    titles = {}
    for entry in chapters():
        source = (ROOT / f"{entry}.md").read_text()
        titles[entry] = re.search(r"^# (.+)$", source, flags=re.M).group(1).strip()
    return titles


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--disable-default-apps"],
        )
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory) -> Path:
    directory = Path(os.environ.get("COURSE_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    directory.mkdir(parents=True, exist_ok=True)
    return directory


@pytest.mark.parametrize("entry", chapters())
def test_page_renders_for_a_reader(built_book, browser, screenshots, entry):  # noqa: F811
    context = browser.new_context(viewport={"width": 1280, "height": 1000}, service_workers="block")
    page = context.new_page()
    outside, console_errors = [], []

    def only_local(route):
        url = route.request.url
        if url.startswith(("file:", "data:", "blob:", "about:")):
            route.continue_()
        else:
            outside.append(url)
            route.abort()

    context.route("**/*", only_local)
    page.on("console", lambda message: message.type == "error" and console_errors.append(message.text))
    page.on("pageerror", lambda error: console_errors.append(str(error)))
    try:
        page.goto((built_book / f"{entry}.html").as_uri(), wait_until="load", timeout=60_000)
        if page.locator("script[src*='mathjax']").count():  # Sphinx adds MathJax only to pages with math
            page.wait_for_function("() => Boolean(window.MathJax && MathJax.startup && MathJax.startup.promise)",
                                   timeout=30_000)
            page.evaluate("() => MathJax.startup.promise")  # resolves once the page is typeset
        page.evaluate("""() => Promise.all([...document.images].map(img => img.complete ? null :
                          new Promise(done => { img.onload = img.onerror = done; })))""")

        heading = page.locator("main h1").first.inner_text()
        assert page_titles()[entry] in heading.replace("#", "").strip(), f"{entry}: heading {heading!r}"

        broken = page.evaluate("() => [...document.images].filter(i => !i.complete || i.naturalWidth === 0)"
                               ".map(i => i.getAttribute('src'))")
        assert not broken, f"{entry}: images that did not load: {broken}"

        math = page.evaluate("""() => {
            const formulas = [...document.querySelectorAll('main .math')];
            return {formulas: formulas.length,
                    typeset: formulas.filter(f => f.querySelector('mjx-container')).length,
                    numbered: document.querySelectorAll('main div.math .eqno').length,
                    labelled: document.querySelectorAll('main div.math[id^="equation-"]').length};
        }""")
        assert math["typeset"] == math["formulas"], f"{entry}: {math['formulas'] - math['typeset']} formulas not typeset"
        assert math["numbered"] >= math["labelled"], f"{entry}: labelled equations without a number: {math}"
        prose = page.evaluate("""() => {
            const main = document.querySelector('main').cloneNode(true);
            main.querySelectorAll('pre, code, script, style, mjx-container, .highlight').forEach(e => e.remove());
            return main.textContent;
        }""")
        raw = sorted(set(m.group(0) for m in RAW_TEX.finditer(prose)))
        assert not raw, f"{entry}: raw TeX visible to the reader: {raw}"
        assert "??" not in prose, f"{entry}: an unresolved cross-reference shows as '??'"

        page.screenshot(path=str(screenshots / f"{entry.replace('/', '_')}.png"), full_page=True)

        # The reading column (book/_vendor/course.css): at 1280 px no code, output, equation or table scrolls
        # sideways, including the listings folded into dropdowns.
        sideways = page.evaluate("""() => {
            document.querySelectorAll('main details').forEach(d => { d.open = true; });
            const boxes = 'main pre, main div.math, main mjx-container[display="true"], main table, ' +
                          'main .pst-scrollable-table-container';
            return [...document.querySelectorAll(boxes)]
                .filter(e => e.clientWidth > 0 && e.scrollWidth > e.clientWidth + 1)
                .map(e => `${e.tagName.toLowerCase()} needs ${e.scrollWidth}px, has ${e.clientWidth}px: ` +
                          (e.textContent || '').trim().slice(0, 60));
        }""")
        assert not sideways, f"{entry}: readers would scroll sideways at 1280 px: {sideways}"

        dropdowns = page.locator("main .admonition.dropdown")
        if dropdowns.count():  # a quiz answer is hidden until its question is clicked
            first = dropdowns.first
            first.scroll_into_view_if_needed()
            body = first.locator("p").last
            assert not body.is_visible(), f"{entry}: quiz answers must be hidden until clicked"
            first.locator(".admonition-title").click()
            body.wait_for(state="visible", timeout=5_000)
        assert not outside, f"{entry}: requests left the machine: {outside}"
        assert not console_errors, f"{entry}: console errors: {console_errors}"
    finally:
        context.close()
