"""The tool's version: the one place it is written.

``pyproject.toml`` reads it (``[tool.setuptools.dynamic]``), ``backdoor_core.__version__`` re-exports it, and
the model cards (``model_readme``) and reports (``report``) record it.
"""

__version__ = "0.1.0"
