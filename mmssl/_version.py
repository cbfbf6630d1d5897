"""The package version, in one place below every layer (``mmssl.__version__``, provenance, ``mmssl --version``)."""

__version__ = "0.1.0"
