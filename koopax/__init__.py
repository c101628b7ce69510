"""koopax: Koopman-operator (DMD) guided training acceleration for Optax.

Public API:

* DMD core: :func:`exact_dmd`, :class:`DMD`, :func:`reconstruct`,
  :func:`predict`, :func:`classify_eigenvalues`.
* Transformations: :func:`kga` (Koopman-based Gradient Acceleration).
"""

from koopax import linalg, snapshots, tree_math
from koopax.dmd import (
    DMD,
    EigenvalueClasses,
    classify_eigenvalues,
    exact_dmd,
    predict,
    reconstruct,
)
from koopax.kga import EfficientKGAState, KGAState, kga
from koopax.snapshots import IncrementWindow

__version__ = "0.1.0"

__all__ = [
    "DMD",
    "EfficientKGAState",
    "EigenvalueClasses",
    "IncrementWindow",
    "KGAState",
    "classify_eigenvalues",
    "exact_dmd",
    "kga",
    "linalg",
    "predict",
    "reconstruct",
    "snapshots",
    "tree_math",
]
