"""The instructor's autograder: ``coursekit grade`` and friends, over real nbgrader, with learner code in an OS sandbox.

Modelled on nbgrader's converters: a thin command over an ordered list of single-purpose steps, each reading
and writing plain data. One module per step or concern:

- :mod:`~coursekit.autograder.cli`: the ``coursekit`` command, for learners (``start``, ``check``, ``handin``,
  ``info``) and instructors (``bundle``, ``collect``, ``grade``, ``feedback``, ``report``, ``export``).
- :mod:`~coursekit.autograder.batch`: one grading run, step by step: probe, lock, plan, stage, grade in
  worker processes, record.
- :mod:`~coursekit.autograder.staging`: the assignment in the gradebook; each submission copied and repaired.
- :mod:`~coursekit.autograder.nbgrader_io`: the course directory, running nbgrader, reading what it decided.
- :mod:`~coursekit.autograder.execute`: the trusted execution step (learner cells in the sandbox, tests in the
  grader), and the bridge between the sandbox and :mod:`coursekit.grading`'s checks.
- :mod:`~coursekit.autograder.sandbox`: the grader's side of the sandbox: the learner's process, and proxies
  for its objects; :mod:`~coursekit.autograder.child`: the learner's side; :mod:`~coursekit.autograder.protocol`:
  the messages between them.
- :mod:`~coursekit.autograder.isolation`: bubblewrap, what the sandbox shows, and whether this machine can
  make it.
- :mod:`~coursekit.autograder.reports`: ``grades.csv`` (scores after nbgrader's late penalty, failure codes),
  the terminal summary, the LMS export.
- :mod:`~coursekit.autograder.cohort`: ``tests.csv`` and ``coursekit report``, the cohort on one offline page.
- :mod:`~coursekit.autograder.notgraded`: submissions that could not be graded, flagged in the formgrader.
- :mod:`~coursekit.autograder.feedback`: feedback pages after hand grading, offline, without hidden tests (the
  course's ``nbgrader_config.py`` applies its settings to every nbgrader command).
- :mod:`~coursekit.autograder.bundle`: the learners' bundle; :mod:`~coursekit.autograder.collect`: hand-in zips
  into ``submitted/`` through ``nbgrader collect``.
- :mod:`~coursekit.autograder.files`: atomic writes and the lock that keeps two runs apart.
- :mod:`~coursekit.autograder.selfcheck`: ``coursekit check NOTEBOOK``, the learner's check before handing in;
  :mod:`~coursekit.autograder.learner`: the rest of the learner's side (work copies, progress across notebooks,
  hand-in zips, ``points_so_far()`` in each notebook's closing cell); :mod:`~coursekit.autograder.workspace`:
  where a learner's course lives (a bundle or the repository) and its order of assignments.

Dependencies point down: :mod:`coursekit.grading` never imports this package, and the sandbox never imports
:mod:`coursekit.grading` (the trusted execution step hands it what it needs).
"""
