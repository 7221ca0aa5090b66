"""Sphinx configuration of the xent_rs documentation site (``bash .ci/build-docs``).

Why these tools: Sphinx, because the API reference is generated from the docstrings
(autodoc/autosummary) and cross-linked; numpydoc, because the docstrings are NumPy style (the
layout NumPy and SciPy users read); MyST, so Sphinx reads the Markdown that already exists: the
guide pages include README.md's sections between ``<!-- docs:NAME -->`` markers, and
docs/semantics.md and benches/RESULTS.md are used as they are, each text with one home;
sphinx-gallery, so every example in examples/gallery/ runs during the build and its printed
output and plots are what the page shows. The build runs with warnings as errors, and a failing
example fails it.
"""

from __future__ import annotations

import os
from pathlib import Path

import xent_rs

ROOT = Path(__file__).resolve().parents[1]

# The training-loop gallery page replays the seed's recorded trajectories through
# examples/seed_training.py: without it the page cannot be built, so say so at once.
if not (ROOT / "examples/seed_training.py").is_file():
    raise RuntimeError(
        "examples/seed_training.py is missing: the gallery page "
        "examples/gallery/plot_seed_training.py imports its replay()"
    )

# The Dask example's LocalCluster would log every worker's start into the build's output.
os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")

project = "xent_rs"
author = "the xent_rs developers"
copyright = "the xent_rs developers"
release = version = xent_rs.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "numpydoc",
    "myst_parser",
    "sphinx_gallery.gen_gallery",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "auto_examples/*.ipynb", "auto_examples/*.py", "**/*.zip"]
templates_path = ["_templates"]

# The Markdown: `#section` links (README -> docs/semantics.md#...) resolve to heading anchors.
myst_heading_anchors = 3

autosummary_generate = True
autodoc_default_options = {"members": True}
autodoc_typehints = "none"  # the signatures' types are in the numpydoc Parameters sections
numpydoc_show_class_members = False  # the class template lists the members instead
numpydoc_xref_param_type = False

sphinx_gallery_conf = {
    "examples_dirs": str(ROOT / "examples/gallery"),
    "gallery_dirs": "auto_examples",  # generated; every plot_*.py runs during the build
    "abort_on_example_error": True,  # an example that raises fails the build, loudly
    "download_all_examples": False,
    "write_computation_times": False,
    "remove_config_comments": True,
}

html_theme = "furo"
html_title = f"xent_rs {release}"
html_static_path: list[str] = []
