"""koopax: Koopman-operator (DMD) guided training acceleration for Optax.

Transformations (each goes last in an ``optax.chain`` and needs ``params``):
:func:`kga`, :func:`efficient_kga`, :func:`masked_kga` (on a
:mod:`koopax.masks` mask), :func:`pdt` and the unmasked prediction baselines
:func:`dmd_prediction`. Their states, :func:`diagnostics` to read them, and
the DMD core (:mod:`koopax.dmd`; :func:`exact_dmd` and friends here too).
The papers' analyses are :mod:`koopax.analysis`. Everything under
``koopax._src`` is private.
"""

from koopax import analysis, dmd, masks
from koopax._src.baselines import dmd_prediction
from koopax._src.diagnostics import diagnostics, find_states, state_diagnostics
from koopax._src.dmd import DMD, EigenvalueClasses, classify_eigenvalues, exact_dmd, predict, reconstruct
from koopax._src.kga.basis import BasisColumns, efficient_kga
from koopax._src.kga.engine import KGAState
from koopax._src.kga.masked import MaskedColumns, masked_kga, masked_kga_kept
from koopax._src.kga.operator import OperatorState
from koopax._src.kga.window import kga
from koopax._src.loss_tracking import LossStats, Valve
from koopax._src.pdt.engine import PDTState, PDTStats
from koopax._src.pdt.engine import ScheduleState as PDTSchedule
from koopax._src.pdt.factory import pdt
from koopax._src.pdt.rollback import RollbackState
from koopax._src.snapshots import RingWindow

__version__ = "0.3.0"

__all__ = [
    "BasisColumns",
    "DMD",
    "EigenvalueClasses",
    "KGAState",
    "LossStats",
    "MaskedColumns",
    "OperatorState",
    "PDTSchedule",
    "PDTState",
    "PDTStats",
    "RingWindow",
    "RollbackState",
    "Valve",
    "analysis",
    "classify_eigenvalues",
    "diagnostics",
    "dmd",
    "dmd_prediction",
    "efficient_kga",
    "exact_dmd",
    "find_states",
    "kga",
    "masked_kga",
    "masked_kga_kept",
    "masks",
    "pdt",
    "predict",
    "reconstruct",
    "state_diagnostics",
]
