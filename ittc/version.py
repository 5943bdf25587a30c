"""The version of ittc (one place; ``ittc.__version__`` re-exports it)."""

__version__ = "0.1.0"
