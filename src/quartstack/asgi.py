"""ASGI entry point for external servers (``hypercorn quartstack.asgi:app``,
``uvicorn quartstack.asgi:app``) and for ``quartstack serve --workers N`` under
either server. Building the app connects nothing.

A worker process the server spawns starts with no logging configured; it gets our
JSON logging here (a process that configured its own logging keeps it)."""

import logging

from quartstack.app import create_app
from quartstack.lifecycle import lifecycle
from quartstack.logging_setup import configure_logging
from quartstack.server_fixes import apply_hypercorn_fixes
from quartstack.settings import load_settings
from quartstack.tracing import configure_tracing

_settings = load_settings()
if not logging.getLogger().handlers:
    configure_logging(_settings.log_level)
apply_hypercorn_fixes(_settings.max_body_bytes)  # in each worker process too
configure_tracing()  # before the app: it installs the server spans only when tracing is on
app = create_app(_settings)
lifecycle(app).freeze_heap = True  # a server process serves this one app until it exits
