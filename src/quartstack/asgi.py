"""ASGI entry point for external servers (``hypercorn quartstack.asgi:app``)
and for ``quartstack serve --workers N``. Building the app connects nothing."""

from quartstack.app import create_app
from quartstack.server_fixes import apply_hypercorn_fixes
from quartstack.settings import load_settings
from quartstack.tracing import configure_tracing

_settings = load_settings()
apply_hypercorn_fixes(_settings.max_body_bytes)  # in each worker process too
configure_tracing()  # before the app: it installs the server spans only when tracing is on
app = create_app(_settings)
