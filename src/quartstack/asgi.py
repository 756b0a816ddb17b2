"""ASGI entry point for external servers (``hypercorn quartstack.asgi:app``)
and for ``quartstack serve --workers N``. Building the app connects nothing."""

from quartstack.app import create_app

app = create_app()
