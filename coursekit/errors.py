"""The one exception the grading checks and the autograder's sandbox share.

It lives here, outside both packages, so that neither imports the other for it: :mod:`coursekit.grading`
lets it pass through a check unchanged (it is not the learner's mistake), and
:mod:`coursekit.autograder.sandbox` raises it.
"""


class SandboxError(RuntimeError):
    """The learner's process died, timed out or broke the protocol: the submission could not be graded."""
