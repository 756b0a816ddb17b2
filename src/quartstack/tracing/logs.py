"""``trace_id`` and ``span_id`` on every log record created inside a recording span.

A log-record factory rather than a change to the JSON formatter: the ids are plain
record attributes, which the formatter prints like any ``extra`` field, and the
factory is only installed when tracing is on (no cost otherwise).
"""

from __future__ import annotations

import logging
from typing import Any

from opentelemetry import trace

_installed = False


def install_log_correlation() -> None:
    """Wrap the current record factory once per process."""
    global _installed
    if _installed:
        return
    _installed = True
    previous = logging.getLogRecordFactory()
    get_current_span = trace.get_current_span

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        context = get_current_span().get_span_context()
        if context.is_valid:
            record.trace_id = f"{context.trace_id:032x}"
            record.span_id = f"{context.span_id:016x}"
        return record

    logging.setLogRecordFactory(factory)
