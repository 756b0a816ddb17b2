"""``/examples/vault``: read KV v2 secrets, with sensitive fields masked."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from quart import Blueprint
from quart_schema import validate_response

from quartstack.auth.scopes import requires
from quartstack.blueprints.openapi import link, path_param, problems
from quartstack.blueprints.validation import check_path_param
from quartstack.integrations.base import get_backend
from quartstack.integrations.redis.response_cache import cached_response
from quartstack.integrations.vault.client import SecretNotFound, VaultAccessDenied, VaultClient
from quartstack.masking import is_sensitive_field, mask
from quartstack.redaction import MASK
from quartstack.web.problems import Problem

blueprint = Blueprint("vault", __name__, url_prefix="/examples/vault")

_NAME_PATTERN = r"^[a-zA-Z0-9_-]+$"
_NOTE = (
    "Fields whose names contain password, pass, pwd, secret, token, key, credential, dsn, "
    "url or uri are masked, and so are passwords inside URLs and known secret values."
)


class SecretBody(BaseModel):
    service: str
    data: dict[str, Any]
    note: str


class SecretKeyBody(BaseModel):
    service: str
    key: str
    value: Any
    note: str


async def _read(service_name: str) -> dict[str, Any]:
    check_path_param("service_name", service_name, _NAME_PATTERN, 50)
    vault = get_backend("vault", VaultClient)
    try:
        return await vault.read_secret(service_name)
    except SecretNotFound as exc:
        raise Problem(404, "secret-not-found", str(exc)) from None
    except VaultAccessDenied:
        detail = f"the service's Vault policy does not allow reading secret {service_name!r}"
        raise Problem(403, "secret-forbidden", detail) from None


@blueprint.get("/secret/<service_name>")
@link(
    200,
    "ReadSecretKey",
    "get_read_secret_key",
    {"service_name": "$response.body#/service"},
    "One field of the same secret (field names are the keys of `data`)",
)
@requires("read")
@path_param("service_name", _NAME_PATTERN, 50)
@cached_response(ttl=300, private=True)
@validate_response(SecretBody)
@problems(403, 404, 422, 503, 504)
async def read_secret(service_name: str) -> SecretBody:
    """All fields of KV v2 secret ``service_name``, sensitive ones masked."""
    data = await _read(service_name)
    return SecretBody(service=service_name, data=mask(data), note=_NOTE)


@blueprint.get("/secret/<service_name>/<key>")
@requires("read")
@path_param("service_name", _NAME_PATTERN, 50)
@path_param("key", _NAME_PATTERN, 100)
@cached_response(ttl=300, private=True)
@validate_response(SecretKeyBody)
@problems(403, 404, 422, 503, 504)
async def read_secret_key(service_name: str, key: str) -> SecretKeyBody:
    """One field of the secret; any JSON type; masked if its name is sensitive."""
    data = await _read(service_name)
    if key not in data:
        raise Problem(
            404, "secret-key-not-found", f"key {key!r} of secret {service_name!r} does not exist"
        )
    value = MASK if is_sensitive_field(key) else mask(data[key])
    return SecretKeyBody(service=service_name, key=key, value=value, note=_NOTE)
