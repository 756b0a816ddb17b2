"""README.md stays true: every route and every setting the app has is documented there."""

from __future__ import annotations

import re
from pathlib import Path

from quartstack.app import create_app
from quartstack.settings import BACKEND_NAMES, Settings, load_settings
from quartstack.web.observability import route_template

README = (Path(__file__).parents[2] / "README.md").read_text()
# Documented once as a pattern: "<NAME>_USER, <NAME>_PASSWORD, <NAME>_DATABASE".
_FALLBACK_CREDENTIAL = re.compile(
    rf"({'|'.join(name.upper() for name in BACKEND_NAMES)})_(USER|PASSWORD|DATABASE)"
)


def _documented_route(template: str) -> bool:
    if template in README:
        return True
    # "/health/{service}" is documented with its values: /health/{vault,postgres,...}
    prefix = template.split("{", 1)[0]
    return re.search(re.escape(prefix) + r"\{[a-z,]+\}", README) is not None


def test_every_route_is_in_the_readme():
    app = create_app(load_settings())
    templates = {route_template(rule.rule) for rule in app.url_map.iter_rules()}
    assert "/examples/cache/{key}" in templates  # the map is the real one
    assert not {t for t in templates if not _documented_route(t)}


def test_every_setting_is_in_the_readme():
    names = [name.upper() for name in Settings.model_fields]
    assert "VAULT_ADDR" in names
    undocumented = [
        name
        for name in names
        if f"`{name}`" not in README
        and not (_FALLBACK_CREDENTIAL.fullmatch(name) and "`<NAME>_USER`" in README)
    ]
    assert not undocumented
