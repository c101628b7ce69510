"""Every ``>>>`` example in the koopax docstrings runs, and prints what it says.

One test per module of the package: :class:`doctest.DocTestFinder` collects the
examples of the module and of everything defined in it (functions, classes,
methods), so a re-exported object is tested once, in the module that defines it.
"""

import doctest
import importlib
import io
import pkgutil

import pytest

import koopax

OPTIONFLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE

MODULES = sorted(
    ["koopax"] + [info.name for info in pkgutil.walk_packages(koopax.__path__, "koopax.")])

# Modules whose public functions carry examples: a docstring edit that loses them
# (or a finder that stops seeing them) fails here rather than passing silently.
DOCUMENTED = ("koopax._src.analysis", "koopax._src.blocks", "koopax._src.clock", "koopax._src.compaction",
              "koopax._src.decomposition", "koopax._src.stacks",
              "koopax._src.control", "koopax._src.diagnostics", "koopax._src.dmd",
              "koopax._src.kga.basis", "koopax._src.kga.masked", "koopax._src.kga.operator",
              "koopax._src.kga.settings",
              "koopax._src.kga.window", "koopax._src.loss_tracking", "koopax._src.masks",
              "koopax._src.pdt.schedule", "koopax._src.restore",
              "koopax._src.snapshots", "koopax._src.tree_math")


def _doctests(name):
    module = importlib.import_module(name)
    return [t for t in doctest.DocTestFinder().find(module, name) if t.examples]


def test_every_module_is_collected():
    assert {"koopax._src.kga.window", "koopax._src.masks", "koopax._src.pdt.engine",
            "koopax._src.tree_math", "koopax.dmd"} <= set(MODULES)


@pytest.mark.parametrize("name", DOCUMENTED)
def test_module_has_examples(name):
    assert _doctests(name), f"{name}: no >>> examples found"


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    out = io.StringIO()
    runner = doctest.DocTestRunner(optionflags=OPTIONFLAGS)
    for test in _doctests(name):
        runner.run(test, out=out.write)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{name}: {result.failed} of {result.attempted} examples failed\n" \
        + out.getvalue()
