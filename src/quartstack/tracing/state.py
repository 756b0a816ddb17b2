"""Whether this process exports traces: one module-level flag the hot paths read (the
guard on every backend call, the request hooks), so tracing off costs one attribute
lookup."""

#: True once :func:`quartstack.tracing.setup.configure_tracing` installed an SDK provider.
active = False
