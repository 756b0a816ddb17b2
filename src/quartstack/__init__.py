"""quartstack: an async Quart service that integrates Vault, SQL, MongoDB, Redis and RabbitMQ."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("quartstack")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0"

NAME = "quartstack"

__all__ = ["NAME", "__version__"]
