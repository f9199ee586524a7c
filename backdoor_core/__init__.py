"""Backdoor Attention Lab's core: see and repair backdoors in BERT-style text classifiers (no Streamlit here).

Importing the package is cheap (no torch); each module imports what it needs.
"""

from ._version import __version__

__all__ = ["__version__"]
