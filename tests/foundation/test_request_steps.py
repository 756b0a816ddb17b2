"""RequestSteps: the web layer's steps run in Quart's hook order, on the event loop,
around the hooks other extensions register with Quart."""

from __future__ import annotations

import threading

from quart import Quart, Response

from quartstack.web.request_steps import request_steps


def _app_with_steps(calls: list[str]) -> Quart:
    app = Quart(__name__)
    loop_thread = threading.get_ident()

    def on_loop(name: str) -> None:
        assert threading.get_ident() == loop_thread, f"{name} ran in a thread"
        calls.append(name)

    steps = request_steps(app)

    def before_a() -> None:
        on_loop("before a")

    async def before_b() -> None:
        on_loop("before b")

    def before_first() -> None:
        on_loop("before first")

    def after_a(response: Response) -> Response:
        on_loop("after a")
        response.headers["X-A"] = "1"
        return response

    async def after_b(response: Response) -> Response:
        on_loop("after b")
        return response

    def teardown_a(_exc: BaseException | None) -> None:
        on_loop("teardown a")

    async def teardown_b(_exc: BaseException | None) -> None:
        on_loop("teardown b")

    steps.before(before_a)
    steps.before(before_b)
    steps.before(before_first, first=True)
    steps.after(after_a)
    steps.after(after_b)
    steps.teardown(teardown_a)
    steps.teardown(teardown_b)

    @app.before_request
    async def quart_before() -> None:
        calls.append("quart before")

    @app.after_request
    async def quart_after(response: Response) -> Response:
        calls.append("quart after")
        return response

    @app.teardown_request
    async def quart_teardown(_exc: BaseException | None) -> None:
        calls.append("quart teardown")

    @app.get("/")
    async def index() -> str:
        calls.append("view")
        return "ok"

    return app


async def test_steps_run_in_quarts_order_around_the_other_hooks():
    calls: list[str] = []
    app = _app_with_steps(calls)
    response = await app.test_client().get("/")
    assert response.status_code == 200
    assert response.headers["X-A"] == "1"
    assert calls == [
        "before first",
        "before a",
        "before b",
        "quart before",
        "view",
        "quart after",
        "after b",
        "after a",
        "quart teardown",
        "teardown b",
        "teardown a",
    ]


async def test_a_before_step_that_answers_ends_the_phase():
    calls: list[str] = []
    app = Quart(__name__)
    steps = request_steps(app)
    assert request_steps(app) is steps  # one set of steps per app

    async def refuse() -> tuple[str, int]:
        calls.append("refuse")
        return "no", 403

    def never() -> None:
        calls.append("never")

    steps.before(refuse)
    steps.before(never)

    @app.get("/")
    async def index() -> str:
        calls.append("view")
        return "ok"

    response = await app.test_client().get("/")
    assert response.status_code == 403
    assert calls == ["refuse"]
