"""``trace_id`` and ``span_id`` on every log line written inside a recording span.

Context fields of the JSON logging (:func:`~quartstack.logging_setup.add_context_field`)
rather than a log-record factory: they are read where the line is rendered, so the
request lines' direct path (no ``LogRecord``) carries them too, and a factory would
send every line down the slower ordinary path. Installed only when tracing is on (no
cost otherwise). The ids are hex, never personal data: marked checked, so the masking
scan skips them (a run of digits in a trace id could look like a card number).
"""

from __future__ import annotations

from opentelemetry import trace

from quartstack.log_masking import Checked
from quartstack.logging_setup import add_context_field

_installed = False


def _trace_id() -> Checked | None:
    context = trace.get_current_span().get_span_context()
    return Checked(f"{context.trace_id:032x}") if context.is_valid else None


def _span_id() -> Checked | None:
    context = trace.get_current_span().get_span_context()
    return Checked(f"{context.span_id:016x}") if context.is_valid else None


def install_log_correlation() -> None:
    """Add the two fields once per process."""
    global _installed
    if _installed:
        return
    _installed = True
    add_context_field("trace_id", _trace_id)
    add_context_field("span_id", _span_id)
