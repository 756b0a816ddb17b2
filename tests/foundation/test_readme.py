"""README.md stays true: every route and every setting the app has is documented there,
each setting with its real default."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from quartstack.app import create_app
from quartstack.settings import BACKEND_NAMES, Settings, load_settings
from quartstack.web.observability import route_template

README = (Path(__file__).parents[2] / "README.md").read_text()
CONFIGURATION = README.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
# Documented in prose, not in a table, for local development only (default: unset):
# "<NAME>_USER, <NAME>_PASSWORD, <NAME>_DATABASE (and RABBITMQ_VHOST, REDIS_PASSWORD)".
_FALLBACK_CREDENTIAL = re.compile(
    rf"({'|'.join(name.upper() for name in BACKEND_NAMES)})_(USER|PASSWORD|DATABASE)"
    r"|RABBITMQ_VHOST|REDIS_PASSWORD"
)
_CELL_VALUE = re.compile(r"`([^`]*)`|\b(unset|empty)\b")


def _documented_route(template: str) -> bool:
    if template in README:
        return True
    # "/health/{service}" is documented with its values: /health/{vault,postgres,...}
    prefix = template.split("{", 1)[0]
    return re.search(re.escape(prefix) + r"\{[a-z,]+\}", README) is not None


def settings_table() -> dict[str, str]:
    """``{VARIABLE: default as README shows it}`` from the configuration tables; a row
    may name several variables with as many defaults (``| `A`, `B` | `1`, unset | ... |``)."""
    documented: dict[str, str] = {}
    for line in CONFIGURATION.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if not line.startswith("| `") or len(cells) < 3:
            continue
        names = re.findall(r"`([A-Z0-9_]+)`", cells[0])
        defaults = [quoted or word for quoted, word in _CELL_VALUE.findall(cells[1])]
        assert len(names) == len(defaults), f"README row does not pair names and defaults: {line}"
        for name, default in zip(names, defaults, strict=True):
            assert name not in documented, f"{name} documented twice"
            documented[name] = default
    return documented


def readme_form(value: Any) -> str:
    """A default as README writes it."""
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return ",".join(value) if value else "empty"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def real_defaults() -> dict[str, Any]:
    return {
        name.upper(): field.get_default(call_default_factory=True)
        for name, field in Settings.model_fields.items()
    }


def test_every_route_is_in_the_readme():
    app = create_app(load_settings())
    templates = {route_template(rule.rule) for rule in app.url_map.iter_rules()}
    assert "/examples/cache/{key}" in templates  # the map is the real one
    assert not {t for t in templates if not _documented_route(t)}


def test_every_setting_is_in_the_readme_with_its_real_default():
    documented = settings_table()
    defaults = real_defaults()
    in_prose = {name for name in defaults if _FALLBACK_CREDENTIAL.fullmatch(name)}
    assert "`<NAME>_USER`" in CONFIGURATION and "`REDIS_PASSWORD`" in CONFIGURATION
    assert {name: defaults[name] for name in in_prose if defaults[name] is not None} == {}

    assert sorted(set(defaults) - in_prose - set(documented)) == []  # undocumented
    assert sorted(set(documented) - set(defaults)) == []  # documented, but no such setting
    wrong = {
        name: (shown, readme_form(defaults[name]))
        for name, shown in documented.items()
        if shown != readme_form(defaults[name])
    }
    assert wrong == {}, "README default vs real default"
