"""indomain: a privacy-preserving sandbox for sensitive public data.

This package holds the CLI, configuration and the wiring of the parts. Its front door
exports only the error root so that every part can import it without a cycle; the wiring
lives in :mod:`indomain.sandbox` and the CLI in :mod:`indomain.cli`.
"""

from indomain.errors import ConfigError, IndomainError, InternalError

__version__ = "0.1.0"

__all__ = ["ConfigError", "IndomainError", "InternalError", "__version__"]
