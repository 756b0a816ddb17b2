"""Whether this process exports traces: one module-level flag the hot paths read (the
guard on every backend call, the request hooks), so tracing off costs one attribute
lookup."""

#: True once :func:`quartstack.tracing.setup.configure_tracing` installed an SDK provider.
active = False

#: True when the sampler is parent-based and drops every child of an unsampled local
#: parent (the default ``parentbased_*`` samplers): a backend call inside a sampled-out
#: request then skips its client span altogether, which the sampler would drop anyway.
children_of_unsampled_dropped = False
