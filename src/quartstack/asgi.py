"""ASGI entry point for external servers (``hypercorn quartstack.asgi:app``,
``uvicorn quartstack.asgi:app``) and for ``quartstack serve --workers N`` under
either server. Building the app connects nothing."""

from quartstack.app import create_app
from quartstack.server_fixes import apply_hypercorn_fixes
from quartstack.settings import load_settings

_settings = load_settings()
apply_hypercorn_fixes(_settings.max_body_bytes)  # in each worker process too
app = create_app(_settings)
