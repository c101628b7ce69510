"""Weight masks for :func:`koopax.masked_kga`: KWM, norm and delta.

A :class:`Mask` is a pure criterion over a :class:`MaskInputs` view of the
window (weights, increments, Gram matrix) plus the static capacity that makes
the masked computation really shrink (see :func:`koopax.masked_kga`).
"""

from koopax._src.masks import Mask, MaskInputs, delta, init, kwm, kwm_scores, norm, update

__all__ = ["Mask", "MaskInputs", "delta", "init", "kwm", "kwm_scores", "norm", "update"]
