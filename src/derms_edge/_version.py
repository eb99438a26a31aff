"""The version of derms-edge: pyproject.toml reads it from here when the package is built, so
the installed metadata and the running gateway say the same, without reading the metadata of
every installed distribution at each start."""

__version__ = "0.1.0"
