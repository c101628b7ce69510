"""Weight masks for :func:`koopax.masked_kga`: KWM, norm and delta.

A :class:`Mask` is a pure criterion over a :class:`MaskInputs` view of the
window (weights, increments, Gram matrix) plus the static capacity that makes
the masked computation really shrink (see :func:`koopax.masked_kga`). Each
criterion is a score against a threshold; with a ``margin`` (the default) a
kept weight near the threshold takes part in KGA in proportion to its
:func:`fade`, so that a weight sitting on the threshold cannot move the run
by a whole correction.
"""

from koopax._src.masks import (Mask, MaskInputs, delta, fade, init, kwm, kwm_scores, norm,
                               roundoff_floor, transient_weights, update)

__all__ = ["Mask", "MaskInputs", "delta", "fade", "init", "kwm", "kwm_scores", "norm",
           "roundoff_floor", "transient_weights", "update"]
