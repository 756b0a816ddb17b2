"""What we rely on in quart-rate-limiter and quart-cors beyond their documented calls.

The limiter reads the limits the library's decorators set (through its public attribute
names) and registers its own hooks; the CORS layer wraps the one ``after_request`` hook
``cors()`` installs. An upgrade that changes either must fail here, by name, rather
than silently stop limiting or stop answering CORS.
"""

from __future__ import annotations

import inspect
from datetime import timedelta

from quart import Blueprint, Quart
from quart_cors import cors
from quart_rate_limiter import (
    QUART_RATE_LIMITER_EXEMPT_ATTRIBUTE,
    QUART_RATE_LIMITER_LIMITS_ATTRIBUTE,
    RateLimit,
    RateLimiter,
    RateLimitExceeded,
    limit_blueprint,
    rate_exempt,
    rate_limit,
)
from quart_rate_limiter.store import RateLimiterStoreABC


def test_rate_limit_decorators_keep_their_limits_where_we_read_them():
    @rate_limit(3, timedelta(seconds=10))
    async def limited() -> str:
        return ""

    @rate_exempt
    async def exempt() -> str:
        return ""

    blueprint = limit_blueprint(Blueprint("contract", __name__), 5, timedelta(minutes=1))
    view_limits = getattr(limited, QUART_RATE_LIMITER_LIMITS_ATTRIBUTE)
    assert [(limit.count, limit.period) for limit in view_limits] == [(3, timedelta(seconds=10))]
    shared = getattr(blueprint, QUART_RATE_LIMITER_LIMITS_ATTRIBUTE)
    assert [(limit.count, limit.period) for limit in shared] == [(5, timedelta(minutes=1))]
    assert getattr(exempt, QUART_RATE_LIMITER_EXEMPT_ATTRIBUTE) is True


def test_rate_limiter_types_keep_the_shape_we_use():
    assert list(inspect.signature(RateLimit).parameters) == [
        "count",
        "period",
        "key_function",
        "skip_function",
    ]
    init = inspect.signature(RateLimiter.__init__).parameters
    assert {"store", "key_function", "skip_function"} <= set(init)
    assert list(inspect.signature(RateLimiter.init_app).parameters) == ["self", "app", "enabled"]
    limiter = RateLimiter(key_function=_key)
    assert limiter.key_function is _key and limiter.skip_function is None
    assert RateLimiterStoreABC.__abstractmethods__ == {
        "get",
        "set",
        "before_serving",
        "after_serving",
    }
    assert ("Retry-After", "7") in RateLimitExceeded(7).get_headers()


def test_cors_installs_exactly_one_after_request_hook():
    app = Quart(__name__)
    before = {key: list(hooks) for key, hooks in app.after_request_funcs.items()}
    cors(app, allow_origin=["https://a.example"], allow_credentials=True, max_age=600)
    added = [
        hook
        for key, hooks in app.after_request_funcs.items()
        for hook in hooks
        if hook not in before.get(key, [])
    ]
    assert len(added) == 1 and len(app.after_request_funcs[None]) == 1
    assert inspect.iscoroutinefunction(added[0])
    assert {"allow_origin", "allow_credentials", "max_age", "expose_headers"} <= set(
        inspect.signature(cors).parameters
    )


async def _key() -> str:
    return "client"
