"""The DMD core: exact DMD by the method of snapshots, and its Gram-matrix pieces.

Everything works on pytrees of snapshots (no leaf is ever flattened or
concatenated) and inside ``jit`` on every backend (no LAPACK ``geev``).
"""

from koopax._src.dmd import (
    DMD,
    EigenvalueClasses,
    ReducedOperator,
    classify_eigenvalues,
    exact_dmd,
    gram_operator,
    predict,
    reconstruct,
)
from koopax._src.linalg import rank_mask
from koopax._src.prediction import PredictionCoefficients, prediction_coefficients

__all__ = [
    "DMD",
    "EigenvalueClasses",
    "PredictionCoefficients",
    "ReducedOperator",
    "classify_eigenvalues",
    "exact_dmd",
    "gram_operator",
    "predict",
    "prediction_coefficients",
    "rank_mask",
    "reconstruct",
]
