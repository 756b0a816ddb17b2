"""HashiCorp Vault: AppRole login, token renewal, KV v2 reads, backend credentials."""
