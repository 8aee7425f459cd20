"""The package version (``llmkit.__version__``)."""

__version__ = "0.2.0"
