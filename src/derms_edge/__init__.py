"""derms-edge: a DER device gateway and edge DERMS controller."""

from derms_edge._version import __version__

__all__ = ["__version__"]
