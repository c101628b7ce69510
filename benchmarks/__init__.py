"""koopax benchmarks (issue 5): step-time overhead and memory of the koopax methods.

Run the scripts from the repository root, e.g. ``python -m benchmarks.overhead``;
:mod:`benchmarks.common` holds the shared measuring helpers.
"""
