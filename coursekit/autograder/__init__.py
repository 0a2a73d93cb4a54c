"""The instructor's autograder: ``coursekit grade`` and friends, over real nbgrader, with learner code in an OS sandbox.

Modelled on nbgrader's converters: a thin command over an ordered list of single-purpose steps, each reading
and writing plain data. One module per step or concern:

- :mod:`~coursekit.autograder.cli`: the ``coursekit`` command (``info``, ``check``, ``grade``, ``export``).
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
- :mod:`~coursekit.autograder.reports`: ``grades.csv``, the terminal summary, the LMS export.
- :mod:`~coursekit.autograder.files`: atomic writes and the lock that keeps two runs apart.
- :mod:`~coursekit.autograder.selfcheck`: ``coursekit check``, the learner's check before handing in.

Dependencies point down: :mod:`coursekit.grading` never imports this package, and the sandbox never imports
:mod:`coursekit.grading` (the trusted execution step hands it what it needs).
"""
