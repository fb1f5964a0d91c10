"""Quiet in a notebook: ``import dnnlab`` prints no tqdm warning in Jupyter without ipywidgets.

optuna imports ``tqdm.auto``, whose first import in a Jupyter kernel without ipywidgets warns
"IProgress not found. Please update jupyter and ipywidgets" (and falls back to the plain bar, as
dnnlab's own bars are). Nothing the README installs provides ipywidgets, so a newcomer's first
cell showed that warning (issue 21). This module, imported first by ``dnnlab/__init__.py``, loads
``tqdm.autonotebook`` with that one warning silenced; later imports of it find it loaded and say
nothing. ``catch_warnings`` restores the warning filters afterwards: no global state changes.
"""

import warnings

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="IProgress not found")
    import tqdm.autonotebook  # noqa: F401
