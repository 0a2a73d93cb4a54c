/* The chapters' self-check quizzes (book/_ext/quiz.py writes the markup): each choice becomes a button; picking
 * one shows why it is right or wrong; the first pick of each question counts towards the score. No network,
 * no library, nothing stored: reload the page to start afresh. */
(function () {
  "use strict";

  function setUpQuestion(question, onChange) {
    const state = { firstTry: null, done: false };
    const feedback = document.createElement("p");
    feedback.className = "cq-feedback";
    feedback.setAttribute("role", "status");
    feedback.setAttribute("aria-live", "polite");
    const choices = Array.from(question.querySelectorAll(".cq-choice"));
    const buttons = choices.map(function (choice) {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "cq-button";
      button.setAttribute("aria-pressed", "false");
      const answer = choice.querySelector(".cq-answer");
      choice.insertBefore(button, answer);
      button.appendChild(answer);
      button.addEventListener("click", function () {
        const right = choice.classList.contains("cq-correct");
        if (state.firstTry === null) state.firstTry = right;
        choice.classList.add("cq-picked", right ? "cq-right" : "cq-wrong");
        button.setAttribute("aria-pressed", "true");
        feedback.textContent = right ? "Right." : "Not quite: read why below, then try another answer.";
        feedback.className = "cq-feedback " + (right ? "cq-feedback-right" : "cq-feedback-wrong");
        if (right) {
          state.done = true;
          question.classList.add("cq-done");
        }
        onChange();
      });
      return button;
    });
    question.appendChild(feedback);
    state.reset = function () {
      state.firstTry = null;
      state.done = false;
      question.classList.remove("cq-done");
      feedback.textContent = "";
      feedback.className = "cq-feedback";
      choices.forEach(function (choice, i) {
        choice.classList.remove("cq-picked", "cq-right", "cq-wrong");
        buttons[i].setAttribute("aria-pressed", "false");
      });
    };
    return state;
  }

  function setUpQuiz(quiz) {
    const score = quiz.querySelector(".cq-score");
    score.setAttribute("role", "status");
    score.setAttribute("aria-live", "polite");
    const line = document.createElement("span");
    const again = document.createElement("button");
    again.type = "button";
    again.className = "cq-again";
    again.textContent = "Start again";
    again.hidden = true;
    score.append(line, again);
    const questions = Array.from(quiz.querySelectorAll(".cq-question"));
    const states = [];
    function update() {
      const total = states.length;
      const answered = states.filter(function (s) { return s.firstTry !== null; }).length;
      const first = states.filter(function (s) { return s.firstTry === true; }).length;
      const done = states.every(function (s) { return s.done; });
      if (answered === 0) {
        line.textContent = "Pick an answer to each question; your first picks make your score.";
      } else if (done) {
        line.textContent = "Score: " + first + " of " + total + " right on the first try." +
          (first === total ? " Well done." : " Reread the explanations of the ones you missed.");
      } else {
        line.textContent = "Score so far: " + first + " of " + answered + " answered right on the first try (" +
          total + " questions).";
      }
      quiz.dataset.score = String(first);
      quiz.dataset.answered = String(answered);
      again.hidden = !done;
    }
    questions.forEach(function (q) { states.push(setUpQuestion(q, update)); });
    again.addEventListener("click", function () {
      states.forEach(function (s) { s.reset(); });
      update();
      const firstButton = quiz.querySelector(".cq-button");
      if (firstButton) firstButton.focus();
    });
    quiz.classList.add("cq-ready");
    update();
  }

  function start() {
    document.querySelectorAll(".cq-quiz").forEach(setUpQuiz);
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
