"""Authentication (API keys from Vault, OIDC JWTs) and per-route scopes (issue 14).

Modules: :mod:`principal` (who), :mod:`api_keys` and :mod:`jwt` (how), :mod:`scopes`
(what each route needs), :mod:`errors` (RFC 6750 answers), :mod:`authentication`
(the request hook and the audit line), :mod:`cli` (``quartstack auth create-key``).
"""
