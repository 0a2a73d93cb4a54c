"""The chapters' self-check quizzes: multiple choice, scored in the reader's browser, offline.

A chapter writes its quiz as YAML inside a ``quiz`` directive; every text is MyST, so math, code and
cross-references work as in the prose::

    ```{quiz}
    - question: What shape are the attention weights for 5 queries over 7 keys of size 64?
      choices:
        - answer: $(5, 7)$
          correct: true
          why: One row per query, one column per key; $d_k$ disappears in the dot product.
        - answer: $(7, 5)$
          why: That is the transpose. Rows belong to queries.
    ```

Each question has exactly one correct choice, and every choice says why it is right or wrong. The page gets a
small script (``quiz/quiz.js``, no network, no library) that turns the choices into buttons, shows each
choice's explanation when it is picked, and keeps the score of first tries. Without JavaScript every
explanation is shown, so nothing is lost.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from docutils import nodes
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective

STATIC = Path(__file__).parent / "quiz_static"  # its quiz/ folder is served as _static/quiz/


class QuizError(ValueError):
    pass


def _validate(data: object) -> list[dict]:
    if not isinstance(data, list) or not data:
        raise QuizError("a quiz is a YAML list of questions, each with `question` and `choices`")
    for number, item in enumerate(data, start=1):
        if not isinstance(item, dict) or not isinstance(item.get("question"), str):
            raise QuizError(f"question {number}: needs `question:` (text)")
        choices = item.get("choices")
        if not isinstance(choices, list) or len(choices) < 2:
            raise QuizError(f"question {number}: needs `choices:`, a list of at least two")
        for choice in choices:
            if not isinstance(choice, dict) or not isinstance(choice.get("answer"), str) \
                    or not isinstance(choice.get("why"), str) or set(choice) - {"answer", "why", "correct"}:
                raise QuizError(f"question {number}: every choice needs `answer:` and `why:` (and may have "
                                f"`correct: true`), got {choice!r}")
        correct = sum(bool(c.get("correct")) for c in choices)
        if correct != 1:
            raise QuizError(f"question {number}: exactly one choice must be `correct: true` (found {correct})")
    return data


class QuizDirective(SphinxDirective):
    has_content = True

    def run(self) -> list[nodes.Node]:
        try:
            questions = _validate(yaml.safe_load("\n".join(self.content)))
        except (yaml.YAMLError, QuizError) as err:
            raise self.error(f"quiz: {err}") from err
        quiz_number = self.env.new_serialno("quiz")
        quiz = nodes.container(classes=["cq-quiz"], ids=[f"quiz-{self.env.docname.replace('/', '-')}-{quiz_number}"])
        for number, item in enumerate(questions, start=1):
            question = nodes.container(classes=["cq-question"])
            prompt = nodes.container(classes=["cq-prompt"])
            prompt += nodes.strong(text=f"{number}. ")
            prompt += self.parse_text_to_nodes(item["question"])
            question += prompt
            choices = nodes.container(classes=["cq-choices"])
            for choice in item["choices"]:
                box = nodes.container(classes=["cq-choice"] + (["cq-correct"] if choice.get("correct") else []))
                answer = self._phrase(choice["answer"], ["cq-answer"])
                why = nodes.container(classes=["cq-why"])
                why += self.parse_text_to_nodes(choice["why"])
                box += [answer, why]
                choices += box
            question += choices
            quiz += question
        quiz += nodes.container(classes=["cq-score"])
        return [quiz]


    def _phrase(self, text: str, classes: list[str]) -> nodes.Element:
        """A choice's text: inline (a <span>, which may sit in a button) when it is one paragraph."""
        parsed = self.parse_text_to_nodes(text)
        if len(parsed) == 1 and isinstance(parsed[0], nodes.paragraph):
            return nodes.inline("", "", *parsed[0].children, classes=classes)
        box = nodes.container(classes=classes)
        box += parsed
        return box


def _add_assets(app: Sphinx, pagename: str, templatename: str, context: dict, doctree) -> None:
    """Only pages with a quiz load its script and style."""
    if doctree is not None and any("cq-quiz" in n["classes"] for n in doctree.findall(nodes.container)):
        app.add_css_file("quiz/quiz.css")
        app.add_js_file("quiz/quiz.js", defer="defer")


def _add_static_path(app: Sphinx, config) -> None:
    config.html_static_path.append(str(STATIC))


def setup(app: Sphinx) -> dict:
    app.add_directive("quiz", QuizDirective)
    app.connect("config-inited", _add_static_path)
    app.connect("html-page-context", _add_assets)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
