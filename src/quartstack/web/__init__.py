"""The cross-cutting web layer: errors, observability, security headers, request bodies."""
