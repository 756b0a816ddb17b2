"""``trace_id`` and ``span_id`` on every log line written inside a recording span.

Context fields of the JSON logging (:func:`~quartstack.logging_setup.add_context_field`)
rather than a log-record factory: they are read where the line is rendered, so the
request lines' direct path (no ``LogRecord``) carries them too, and a factory would
send every line down the slower ordinary path. Installed only when tracing is on (no
cost otherwise). The ids come formatted from :mod:`.span_ids` (once per span, marked
checked for the masking scan).
"""

from __future__ import annotations

from quartstack.log_masking import Checked
from quartstack.logging_setup import add_context_field
from quartstack.tracing.span_ids import current_ids

_installed = False


def _trace_id() -> Checked | None:
    ids = current_ids()
    return None if ids is None else ids.trace_id


def _span_id() -> Checked | None:
    ids = current_ids()
    return None if ids is None else ids.span_id


def install_log_correlation() -> None:
    """Add the two fields once per process."""
    global _installed
    if _installed:
        return
    _installed = True
    add_context_field("trace_id", _trace_id)
    add_context_field("span_id", _span_id)
