"""Executes the jupytext notebooks of ``notebooks/`` into ``docs/notebooks/*.ipynb``.

The docs build never executes a notebook (``nb_execution_mode = "off"`` in
``docs/conf.py``): it renders the outputs stored in the committed ``.ipynb``
files, which this script regenerates. Run it from the repository root after a
change to a notebook or to what it shows::

    pip install -e ".[examples,dev,docs]"
    python docs/render_notebooks.py            # the notebooks' full configuration
    python docs/render_notebooks.py --quick    # KOOPAX_NB_QUICK=1 (tiny, minutes)
    python docs/render_notebooks.py --quick kga_vs_optax.py   # one notebook

Each rendered notebook starts with a note saying which mode produced it. To keep
the committed files small, standard-error streams (progress bars, JAX warnings)
are dropped and every PNG output is re-encoded with a 256-colour palette.
"""

import argparse
import base64
import io
import os
import sys
import time

import jupytext
import nbclient
import nbformat

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCES = os.path.join(ROOT, "notebooks")
TARGET = os.path.join(ROOT, "docs", "notebooks")
NOTEBOOKS = ("kga_vs_optax.py", "pdt_masked_prediction.py", "training_dynamics.py",
             "analyses.py")


def _note(name, quick):
    mode = ("quick mode (`KOOPAX_NB_QUICK=1`: the tiny configuration the tests run, so "
            "the curves are short and noisy)" if quick else "its full configuration")
    return (f"*Rendered by `docs/render_notebooks.py` in {mode} from the jupytext file "
            f"`notebooks/{name}`.*")


def _shrink_png(data):
    """A base64 PNG re-encoded with an adaptive 256-colour palette (plots lose nothing visible)."""
    from PIL import Image

    image = Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")
    out = io.BytesIO()
    image.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(out, format="PNG",
                                                                     optimize=True)
    return base64.b64encode(out.getvalue()).decode("ascii")


def _clean(nb):
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        outputs = []
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream" and output.get("name") == "stderr":
                continue
            data = output.get("data", {})
            if "image/png" in data:
                data["image/png"] = _shrink_png(data["image/png"])
            outputs.append(output)
        cell.outputs = outputs
        cell.metadata.pop("execution", None)


def render(name, quick, timeout):
    nb = jupytext.read(os.path.join(SOURCES, name))
    env = dict(os.environ, KOOPAX_NB_QUICK="1" if quick else "0",
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    client = nbclient.NotebookClient(nb, timeout=timeout, kernel_name="python3",
                                     resources={"metadata": {"path": SOURCES}})
    client.execute(env=env)  # the kernel's environment
    _clean(nb)
    nb.cells.insert(1, nbformat.v4.new_markdown_cell(_note(name, quick)))  # after the title
    nb.metadata.pop("jupytext", None)
    for i, cell in enumerate(nb.cells):
        cell.id = f"cell-{i}"  # stable ids: a rerun changes only what it shows
    os.makedirs(TARGET, exist_ok=True)
    path = os.path.join(TARGET, name[:-3] + ".ipynb")
    nbformat.write(nb, path)
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", default=NOTEBOOKS, help="notebooks/ files to render")
    parser.add_argument("--quick", action="store_true", help="KOOPAX_NB_QUICK=1")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds per cell")
    args = parser.parse_args(argv)
    for name in args.names:
        start = time.perf_counter()
        path = render(name, args.quick, args.timeout)
        print(f"{name}: {time.perf_counter() - start:.0f} s -> "
              f"{os.path.relpath(path, ROOT)} ({os.path.getsize(path) / 1024:.0f} KB)")


if __name__ == "__main__":
    sys.exit(main())
