"""A Vault-API-compatible HTTP server for the tests (no Vault binary installs here)."""
