"""Backend integrations: one small extension per backend, each owning its client."""
