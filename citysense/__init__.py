"""citysense application shell: settings, CLI, embedded service stack, service runtime.

The pipeline stages live in the sibling packages ``ingest``, ``decoders``, ``streams``,
``sinks``, ``schemas`` and ``simulators``; this package holds what they share.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("citysense")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
