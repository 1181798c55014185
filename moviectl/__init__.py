"""moviectl: an operator's command-line toolkit for the movie service's PostgreSQL database."""

from moviectl.infra.errors import MoviectlError

__version__ = "0.1.0"

__all__ = ["MoviectlError", "__version__"]
