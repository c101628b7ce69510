"""The reference site's sources document the public API, and only it (no Sphinx build).

``docs/api.rst`` lists the public names in ``autosummary`` tables (Sphinx makes a
page of each); these tests read it as text, resolve every entry and compare with
the ``__all__`` lists of the public modules.
"""

import glob
import importlib
import inspect
import json
import os
import re

import pytest

import koopax

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, "docs")
API = os.path.join(DOCS, "api.rst")
PUBLIC_MODULES = ("koopax", "koopax.dmd", "koopax.masks", "koopax.analysis")
DIRECTIVE = re.compile(r"\.\. (currentmodule|automodule|autosummary)::\s*(\S*)")


def _api_entries():
    """``(modules, entries)`` of docs/api.rst: the ``automodule`` names and the
    ``(current module, name)`` of every autosummary row."""
    modules, entries = [], []
    current, in_table = None, False
    with open(API, encoding="utf-8") as f:
        for line in f:
            match = DIRECTIVE.match(line)
            if match:
                kind, name = match.groups()
                in_table = kind == "autosummary"
                if kind != "autosummary":
                    current = name
                if kind == "automodule":
                    modules.append(name)
                continue
            if in_table:
                text = line.strip()
                if not text or text.startswith(":"):
                    continue  # blank lines and the directive's options
                if line.startswith("   "):
                    entries.append((current, text))
                else:
                    in_table = False
    return modules, entries


def _public_objects():
    """``{(module, name): obj}`` for every name in a public module's ``__all__``."""
    out = {}
    for modname in PUBLIC_MODULES:
        module = importlib.import_module(modname)
        for name in module.__all__:
            out[modname, name] = getattr(module, name)
    return out


def test_api_source_is_parsed():
    modules, entries = _api_entries()
    assert set(modules) == set(PUBLIC_MODULES)
    assert ("koopax", "kga") in entries and ("koopax.masks", "kwm") in entries


def test_every_public_name_is_documented():
    modules, entries = _api_entries()
    documented = [getattr(importlib.import_module(mod), name) for mod, name in entries]
    missing = []
    for (modname, name), obj in _public_objects().items():
        if inspect.ismodule(obj):
            ok = obj.__name__ in modules
        else:  # documented under this name or, re-exported, under another public one
            ok = any(obj is other for other in documented)
        if not ok:
            missing.append(f"{modname}.{name}")
    assert not missing, f"public names missing from docs/api.rst: {missing}"


def test_only_public_names_are_documented():
    _, entries = _api_entries()
    public = _public_objects()
    private = [f"{mod}.{name}" for mod, name in entries if (mod, name) not in public]
    assert not private, f"docs/api.rst documents names outside the public __all__: {private}"
    assert len(entries) == len(set(entries)), "a name is listed twice in docs/api.rst"


def test_no_private_module_is_documented_as_api():
    # The design pages render koopax._src docstrings as text (module-docstring);
    # no autodoc directive may declare a koopax._src object.
    pattern = re.compile(r"(\.\.\s+|\{)auto\w+(::|\})\s*koopax\._src")
    offenders = []
    for path in glob.glob(os.path.join(DOCS, "**", "*.*"), recursive=True):
        if "_build" in path or not path.endswith((".rst", ".md")):
            continue
        with open(path, encoding="utf-8") as f:
            if pattern.search(f.read()):
                offenders.append(os.path.relpath(path, ROOT))
    assert not offenders


def test_changelog_names_the_version():
    with open(os.path.join(ROOT, "CHANGELOG.md"), encoding="utf-8") as f:
        versions = re.findall(r"^## (\d+\.\d+\.\d+)", f.read(), flags=re.M)
    assert versions and versions[0] == koopax.__version__


def test_one_version_source():
    tomllib = pytest.importorskip("tomllib")
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        project = tomllib.load(f)
    assert "version" not in project["project"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "koopax.__version__"}


NOTEBOOKS = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(ROOT, "notebooks", "*.py")))


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_rendered(name):
    path = os.path.join(DOCS, "notebooks", name + ".ipynb")
    assert os.path.exists(path), f"run python docs/render_notebooks.py {name}.py"
    with open(path, encoding="utf-8") as f:
        nb = json.load(f)
    outputs = [o for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])]
    assert any("image/png" in o.get("data", {}) for o in outputs)
    assert not [o for o in outputs if o.get("output_type") == "error"]
    with open(os.path.join(DOCS, "notebooks.md"), encoding="utf-8") as f:
        assert f"notebooks/{name}" in f.read()
