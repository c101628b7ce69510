"""Sphinx configuration for the koopax API reference.

Build (warnings are errors)::

    python -m sphinx -W --keep-going -b html docs docs/_build/html
"""

import importlib
import inspect
import os
import sys

# Import koopax from this checkout, installed or not.
sys.path.insert(0, os.path.abspath(".."))

import koopax  # noqa: E402

project = "koopax"
author = "koopax authors"
copyright = "koopax authors"  # noqa: A001  (Sphinx's name for it)
release = koopax.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "myst_parser",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]

# Google-style docstrings (Args:, Returns:, Attributes:, Examples:).
napoleon_google_docstring = True
napoleon_numpy_docstring = False

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
# Signatures show defaults as written in the source (e.g. jnp.float32, not a repr).
autodoc_preserve_defaults = True

html_theme = "alabaster"
html_static_path = []
html_title = f"koopax {release}"


def _skip_namedtuple_fields(app, what, name, obj, skip, options):
    """Leaves NamedTuple fields to the class docstring's ``Attributes:`` section.

    ``collections.namedtuple`` gives every field a descriptor documented only as
    "Alias for field number i"; the ``Attributes:`` section (rendered by napoleon
    as ``.. attribute::`` entries) describes them, and documenting both would
    make Sphinx report duplicate object descriptions.
    """
    del app, name, skip, options
    if what == "class" and type(obj).__name__ == "_tuplegetter":
        return True
    return None


def _module_docstring_directive():
    """``.. module-docstring:: koopax.kga``: a module's docstring, rendered as text.

    ``koopax.kga`` and ``koopax.pdt`` are both a submodule and the function the
    package exports under the same name; Sphinx keeps one object per dotted
    name, so ``automodule`` on those modules would collide with the documented
    functions. This directive renders the module's (Google-style) docstring
    without declaring a module object.
    """
    from docutils import nodes
    from docutils.statemachine import StringList
    from sphinx.ext.napoleon.docstring import GoogleDocstring
    from sphinx.util.docutils import SphinxDirective
    from sphinx.util.nodes import nested_parse_with_titles

    class ModuleDocstring(SphinxDirective):
        required_arguments = 1

        def run(self):
            name = self.arguments[0]
            module = importlib.import_module(name)  # the module, even if shadowed
            source = inspect.getsourcefile(module)
            self.env.note_dependency(source)
            doc = inspect.getdoc(module) or ""
            lines = GoogleDocstring(doc, self.config, app=self.env.app, what="module",
                                    name=name, obj=module).lines()
            content = StringList(lines, source=f"{source}:docstring of {name}")
            holder = nodes.Element()
            nested_parse_with_titles(self.state, content, holder)
            return holder.children

    return ModuleDocstring


def setup(app):
    app.connect("autodoc-skip-member", _skip_namedtuple_fields)
    app.add_directive("module-docstring", _module_docstring_directive())
