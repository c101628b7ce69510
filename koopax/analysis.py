"""The papers' analyses over recorded training runs.

Eigenvalues window by window (KGA Fig. 2) or as the transformations recorded
them, the neutral/transient split of a trajectory, when a mask drops each
weight (KGA Fig. 4), the variance an early basis explains later (KGA App. A.6)
and PDT's accepted fraction (PDT Fig. 5).
"""

from koopax._src.analysis import (
    AcceptedFractions,
    EigenvalueHistory,
    accepted_fractions,
    eigenvalue_history,
    recorded_eigenvalues,
)
from koopax._src.decomposition import (
    NeutralSplit,
    mask_drop_epochs,
    neutral_reconstruction,
    variance_explained,
)
from koopax._src.stacks import stack_snapshots

__all__ = [
    "AcceptedFractions",
    "EigenvalueHistory",
    "NeutralSplit",
    "accepted_fractions",
    "eigenvalue_history",
    "mask_drop_epochs",
    "neutral_reconstruction",
    "recorded_eigenvalues",
    "stack_snapshots",
    "variance_explained",
]
