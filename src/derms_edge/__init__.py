"""derms-edge: a DER device gateway and edge DERMS controller."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("derms-edge")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
