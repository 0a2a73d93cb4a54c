"""coursekit: the reference implementations behind *Attention Mechanisms and Transformers*.

One module per concept, named as the book names it:

- :mod:`coursekit.masks`: causal and padding masks (True = not allowed, as in ``torch.nn``).
- :mod:`coursekit.attention`: scaled dot-product attention and its relatives.
- :mod:`coursekit.device`: picking CUDA, MPS or CPU.
- :mod:`coursekit.viz`: attention heat maps and training curves.
- :mod:`coursekit.grading`: checks for the graded notebooks and the autograder.
"""

__version__ = "0.1.0"
