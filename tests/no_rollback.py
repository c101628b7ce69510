"""The KGA factories with ``rollback=False``: for the tests of other properties,
which call ``update`` without ``value`` (the rollback requires it; tests/test_safety.py
tests the rollback itself)."""

import functools

import koopax

kga = functools.partial(koopax.kga, rollback=False)
efficient_kga = functools.partial(koopax.efficient_kga, rollback=False)
masked_kga = functools.partial(koopax.masked_kga, rollback=False)
