"""koopax: Koopman-operator (DMD) guided training acceleration for Optax.

The public namespace is flat; the modules behind it hold one concept each:

* Transformations: :func:`kga` (Koopman-based Gradient Acceleration over the
  increment window), :func:`efficient_kga` (over a streaming basis),
  :func:`masked_kga` (on the weights a :mod:`koopax.masks` mask keeps),
  :func:`pdt` (Predictive Differential Training), :func:`dmd_prediction`
  (unmasked DMD jump baselines).
* DMD core: :func:`exact_dmd`, :class:`DMD`, :func:`reconstruct`,
  :func:`predict`, :func:`classify_eigenvalues`.
* Building blocks: :mod:`koopax.snapshots` (the one window),
  :mod:`koopax.acceleration` (KGA's operator and bound),
  :mod:`koopax.prediction` (DMD prediction coefficients),
  :mod:`koopax.loss_tracking`, :mod:`koopax.linalg`, :mod:`koopax.tree_math`.
"""

from koopax import acceleration, linalg, loss_tracking, masks, prediction, snapshots, tree_math
from koopax.baselines import dmd_prediction
from koopax.dmd import (
    DMD,
    EigenvalueClasses,
    classify_eigenvalues,
    exact_dmd,
    predict,
    reconstruct,
)
from koopax.kga_basis import EfficientKGAState, efficient_kga
from koopax.kga_masked import MaskedKGAState, masked_kga, masked_kga_kept
from koopax.kga_window import KGAState, kga
from koopax.predictive_training import PDTState, pdt
from koopax.snapshots import RingWindow

__version__ = "0.2.0"

__all__ = [
    "DMD",
    "EfficientKGAState",
    "EigenvalueClasses",
    "KGAState",
    "MaskedKGAState",
    "PDTState",
    "RingWindow",
    "acceleration",
    "classify_eigenvalues",
    "dmd_prediction",
    "efficient_kga",
    "exact_dmd",
    "kga",
    "linalg",
    "loss_tracking",
    "masked_kga",
    "masked_kga_kept",
    "masks",
    "pdt",
    "predict",
    "prediction",
    "reconstruct",
    "snapshots",
    "tree_math",
]
