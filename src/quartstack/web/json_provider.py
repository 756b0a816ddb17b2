"""The app's JSON encoding: Flask's (Quart's) default output, written by orjson.

Every JSON response went through ``json.dumps`` with keyword arguments, which builds a
new ``JSONEncoder`` per call; orjson writes the same bytes several times faster. Same
output as Flask's :class:`~flask.json.provider.DefaultJSONProvider`: sorted keys, compact
separators and a trailing newline in responses (``dumps`` with other arguments, or none,
is ``json``'s), ``\\uXXXX`` escapes for non-ASCII (such a document is handed to ``json``
instead); dates, UUIDs, decimals, dataclasses and pydantic values are what the
provider's ``default`` makes of them (Flask's, or quart_schema's in the app). What
orjson cannot or would write differently goes to ``json`` too: ints beyond 64 bits,
keys that are not strings, anything the ``default`` refuses (the same error then). Two
edge cases differ: floats outside ``1e-7..1e16`` are written without the ``+`` in the
exponent (``1e16``, the same number), and NaN or infinity become ``null`` rather than
the invalid ``NaN``.
"""

from __future__ import annotations

from typing import Any

import orjson
from quart.json.provider import DefaultJSONProvider
from werkzeug.sansio.response import Response

_COMPACT = {"separators": (",", ":")}
_PASSTHROUGH = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


class OrjsonProvider(DefaultJSONProvider):
    """:class:`DefaultJSONProvider` with orjson doing the writing (see the module)."""

    def _compact(self, obj: Any) -> bytes | None:
        """``obj`` as Flask writes it compactly, or None when ``json`` must do it."""
        option = _PASSTHROUGH | (orjson.OPT_SORT_KEYS if self.sort_keys else 0)
        try:
            data = orjson.dumps(obj, default=self.default, option=option)
        except (orjson.JSONEncodeError, TypeError):
            return None
        if self.ensure_ascii and not data.isascii():
            return None
        return data

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        if kwargs == _COMPACT:  # as responses are written; json's default spaces otherwise
            data = self._compact(obj)
            if data is not None:
                return data.decode()
        return super().dumps(obj, **kwargs)

    def response(self, *args: Any, **kwargs: Any) -> Response:
        if (self.compact is None and self._app.debug) or self.compact is False:
            return super().response(*args, **kwargs)  # indented: Flask's own
        obj = self._prepare_response_obj(args, kwargs)
        data = self._compact(obj)
        if data is None:
            return super().response(*args, **kwargs)
        return self._app.response_class(data + b"\n", mimetype=self.mimetype)  # type: ignore[arg-type]
