"""moviectl: an operator's command-line toolkit for the movie service's PostgreSQL database."""

__version__ = "0.1.0"

__all__ = ["MoviectlError", "__version__"]

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (~7 ms)
if TYPE_CHECKING:
    from moviectl.infra.errors import MoviectlError


def __getattr__(name: str) -> object:
    """``moviectl.MoviectlError``, imported on first use (PEP 562): every module of the
    package runs this file first, and ``health --live`` never needs the errors' enum."""
    if name == "MoviectlError":
        from moviectl.infra.errors import MoviectlError

        return MoviectlError
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
