"""The package version, on the ground floor so any module may import it without importing the package."""

__version__ = "0.3.0"
