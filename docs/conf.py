"""Sphinx configuration for the koopax reference site.

Build (warnings are errors)::

    python -m sphinx -W --keep-going -b html docs docs/_build/html

``docs/api.rst`` lists the public names in ``autosummary`` tables; Sphinx
generates one page per name under ``docs/api/`` (not committed). The notebooks
under ``docs/notebooks/`` are rendered from their stored outputs and never
executed here (``docs/render_notebooks.py`` regenerates them).
"""

import importlib
import inspect
import os
import shutil
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
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "myst_nb",  # MyST Markdown (myst-parser) and stored notebook outputs
]

root_doc = "index"
exclude_patterns = ["_build"]
templates_path = ["_templates"]

# One page per public name (docs/api.rst's tables), generated into docs/api/ at
# every build. The folder is emptied first: a page left from a renamed or
# removed name would otherwise be "not included in any toctree" (an error).
shutil.rmtree(os.path.join(os.path.dirname(os.path.abspath(__file__)), "api"), ignore_errors=True)
autosummary_generate = True
autosummary_imported_members = False

# The notebooks are executed by docs/render_notebooks.py, never by the build.
nb_execution_mode = "off"
nb_merge_streams = True  # one output box per cell, not one per print
myst_enable_extensions = ["dollarmath"]
myst_heading_anchors = 3

# Google-style docstrings (Args:, Returns:, Attributes:, Examples:).
napoleon_google_docstring = True
napoleon_numpy_docstring = False
# The Attributes: sections say each field's dtype and shape in words; the raw
# annotations (jax.Array, private module paths) would only repeat them worse.
napoleon_attr_annotations = False

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
# Signatures show defaults as written in the source (e.g. jnp.float32, not a repr).
autodoc_preserve_defaults = True
# ``jax.typing.ArrayLike`` is a six-type union: show its name, not its expansion.
autodoc_type_aliases = {"jax.typing.ArrayLike": "ArrayLike"}
autodoc_typehints_format = "short"
# A long signature gets one parameter per line.
maximum_signature_line_length = 88

html_theme = "pydata_sphinx_theme"
html_title = f"koopax {release}"
html_static_path = ["_static"]
html_css_files = ["custom.css"]
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "navbar_align": "left",
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version", "theme-version"],
    # The notebooks' plots get the page's whole width (no right-hand sidebar).
    "secondary_sidebar_items": {
        pattern: ["page-toc", "sourcelink"] for pattern in ("*", "api/*", "how_it_works/*")
    } | {"notebooks/*": []},
}
# Pages without subpages need no section navigation.
html_sidebars = {page: [] for page in ("index", "usage", "design", "benchmarks", "reproduction",
                                       "changelog")}


def _present_public_names():
    """Gives every public class its public name, for this build only.

    ``koopax.PDTSchedule`` is ``koopax._src.pdt.engine.ScheduleState``
    re-exported under another name; autodoc documents a class whose
    ``__name__`` differs from the documented name as "alias of ...", without
    its docstring or fields. Renaming the class object in the Sphinx process
    documents it as what users import (koopax itself is unchanged).
    """
    for module in (koopax, koopax.dmd, koopax.masks, koopax.analysis):
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.isclass(obj) and obj.__name__ != name:
                obj.__name__ = obj.__qualname__ = name


_present_public_names()


def _namedtuple_signature(app, what, name, obj, options, signature, return_annotation):
    """A NamedTuple (every public class) shows no signature when its docstring's
    ``Attributes:`` lists the fields in order right below, its field names otherwise.

    The annotations autodoc would show (``jax.Array``, private module aliases)
    add nothing to the fields' descriptions.
    """
    del app, name, options, signature, return_annotation
    if what == "class" and inspect.isclass(obj) and issubclass(obj, tuple) \
            and hasattr(obj, "_fields"):
        if "Attributes:" in (inspect.getdoc(obj) or ""):
            return "", None
        return f"({', '.join(obj._fields)})", None
    return None  # everything else as autodoc made it


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
    app.connect("autodoc-process-signature", _namedtuple_signature)
    app.add_directive("module-docstring", _module_docstring_directive())
