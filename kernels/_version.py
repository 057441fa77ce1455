"""The package version; the C library is built with the same string and checked against it."""

__version__ = "0.1.0"
