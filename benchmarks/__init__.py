"""koopax benchmarks (issue 5): step-time overhead and memory of the koopax methods.

Run the scripts from the repository root, e.g. ``python -m benchmarks.overhead``;
:mod:`benchmarks.common` holds the shared measuring helpers.
"""

import os as _os

#: Where the suite's published results live (committed, read by BENCHMARKS.md).
RESULTS_DIR = _os.path.join("benchmarks", "results")
#: Where ``--quick`` smoke runs go, so they never overwrite the published results.
QUICK_DIR = _os.path.join("runs", "benchmarks_quick")


def default_output_dir(quick: bool, *parts: str) -> str:
    """``--output-dir``'s default: under :data:`QUICK_DIR` for ``--quick`` runs."""
    return _os.path.join(QUICK_DIR if quick else RESULTS_DIR, *parts)

