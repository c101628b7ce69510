"""koopax: Koopman-operator (DMD) guided training acceleration for Optax.

Public API:

* DMD core: :func:`exact_dmd`, :class:`DMD`, :func:`reconstruct`,
  :func:`predict`, :func:`classify_eigenvalues`.
* Transformations: :func:`kga` (Koopman-based Gradient Acceleration),
  :func:`pdt` (Predictive Differential Training), :func:`dmd_prediction`
  (unmasked DMD jump baselines).
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
from koopax import prediction
from koopax.baselines import dmd_prediction
from koopax.pdt import PDTState, pdt
from koopax.snapshots import IncrementWindow

__version__ = "0.1.0"

__all__ = [
    "DMD",
    "EfficientKGAState",
    "EigenvalueClasses",
    "IncrementWindow",
    "KGAState",
    "PDTState",
    "classify_eigenvalues",
    "dmd_prediction",
    "exact_dmd",
    "kga",
    "pdt",
    "linalg",
    "predict",
    "prediction",
    "reconstruct",
    "snapshots",
    "tree_math",
    "masks",
    "masked_kga",
]

from koopax import masked_kga, masks  # noqa: E402  (kga(mask=...); issue 3)
