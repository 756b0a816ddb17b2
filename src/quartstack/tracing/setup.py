"""Build the SDK tracer provider from the standard ``OTEL_*`` environment variables.

Tracing is on only when an OTLP endpoint is configured (``OTEL_EXPORTER_OTLP_ENDPOINT``
or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) and ``OTEL_SDK_DISABLED`` is not true;
otherwise no SDK provider is installed and the OpenTelemetry API stays a no-op. The
SDK and the exporter read the rest themselves (sampler, resource attributes, headers,
timeout, compression, batch sizes), exactly as for any OpenTelemetry program, so an
existing collector, Jaeger or Tempo setup just works.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping

from opentelemetry import trace
from opentelemetry.sdk.resources import OTELResourceDetector, Resource
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, Sampler

from quartstack import NAME, __version__
from quartstack.tracing import otlp_encoding, state
from quartstack.tracing.fast_spans import FastTracerProvider
from quartstack.tracing.logs import install_log_correlation

logger = logging.getLogger("quartstack.tracing")

TRACER_NAME = "quartstack"
#: Environment variables the chart fills from the downward API.
POD_NAME_ENV = "K8S_POD_NAME"
NAMESPACE_ENV = "K8S_NAMESPACE_NAME"

_provider: FastTracerProvider | None = None
_lock = threading.Lock()


def tracing_enabled() -> bool:
    return state.active


def wanted(environ: Mapping[str, str]) -> bool:
    """An endpoint is set and the SDK is not disabled (``OTEL_TRACES_EXPORTER=none``
    turns traces off too, as in the SDK's own auto-configuration)."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() == "none":
        return False
    return bool(
        environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
        or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    )


def build_resource(service_name: str, environ: Mapping[str, str]) -> Resource:
    """Our defaults (name, version, pod, namespace), overridden by ``OTEL_SERVICE_NAME``
    and ``OTEL_RESOURCE_ATTRIBUTES``."""
    defaults: dict[str, str] = {"service.name": service_name, "service.version": __version__}
    pod = environ.get(POD_NAME_ENV)
    if pod:
        defaults["k8s.pod.name"] = pod
        defaults["service.instance.id"] = pod
    namespace = environ.get(NAMESPACE_ENV)
    if namespace:
        defaults["k8s.namespace.name"] = namespace
    return Resource.create(defaults).merge(OTELResourceDetector().detect())


def _exporter(environ: Mapping[str, str]) -> SpanExporter | None:
    protocol = (
        environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    ).strip()
    if protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        otlp_encoding.install()  # the same bytes, a fifth of the CPU
        return OTLPSpanExporter()  # endpoint, headers, timeout, compression from OTEL_*
    if protocol == "grpc":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # type: ignore[import-not-found,unused-ignore]
                OTLPSpanExporter as GrpcExporter,
            )
        except ImportError:
            logger.error(
                "OTEL_EXPORTER_OTLP_PROTOCOL=grpc needs opentelemetry-exporter-otlp-proto-grpc "
                "installed; tracing stays off"
            )
            return None
        exporter: SpanExporter = GrpcExporter()
        return exporter
    logger.error("unsupported OTLP protocol; tracing stays off", extra={"protocol": protocol})
    return None


def drops_children_of_unsampled(sampler: Sampler) -> bool:
    """The sampler is the SDK's ``ParentBased`` whose own delegate for an unsampled local
    parent is ``AlwaysOff`` (the default of every ``parentbased_*`` sampler): the last
    part of its public description, after any nested root sampler's."""
    if not isinstance(sampler, ParentBased):
        return False
    description: str = sampler.get_description()  # type: ignore[no-untyped-call]
    return description.endswith(",localParentNotSampled:AlwaysOffSampler}")


def configure_tracing(service_name: str = NAME, environ: Mapping[str, str] | None = None) -> bool:
    """Install the SDK provider if the environment asks for traces; True if tracing is
    on. Idempotent: the first call in a process decides."""
    global _provider
    env = os.environ if environ is None else environ
    with _lock:
        if _provider is not None:
            return True
        if not wanted(env):
            return False
        exporter = _exporter(env)
        if exporter is None:
            return False
        # Sampler from OTEL_TRACES_SAMPLER/_ARG (default parentbased_always_on); the batch
        # queue is bounded (OTEL_BSP_MAX_QUEUE_SIZE, default 2048 spans): beyond it spans
        # are dropped, never memory without end.
        provider = FastTracerProvider(
            resource=build_resource(service_name, env), shutdown_on_exit=False
        )
        provider.add_span_processor(BatchSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        _provider = provider
        state.children_of_unsampled_dropped = drops_children_of_unsampled(provider.sampler)
        state.active = True
    install_log_correlation()
    logger.info(
        "tracing on",
        extra={"service_name": provider.resource.attributes.get("service.name")},
    )
    return True


def _bounded(action: str, timeout: float) -> bool:
    """Run a blocking provider call on a daemon thread for at most ``timeout`` seconds:
    a collector that does not answer must not hold the shutdown past its budget."""
    provider = _provider
    if provider is None:
        return True
    call = provider.force_flush if action == "flush" else provider.shutdown
    done = threading.Event()

    def run() -> None:
        try:
            call()
        finally:
            done.set()

    threading.Thread(target=run, name=f"otel-{action}", daemon=True).start()
    finished = done.wait(max(0.0, timeout))
    if not finished:
        logger.warning(
            "spans not exported within the shutdown budget", extra={"timeout_s": timeout}
        )
    return finished


def flush_tracing(timeout: float) -> bool:
    """Export the spans ended so far, within ``timeout`` seconds (blocking)."""
    return _bounded("flush", timeout)


def shutdown_tracing(timeout: float) -> bool:
    """Flush and stop the exporter within ``timeout`` seconds; tracing is off after."""
    global _provider
    finished = _bounded("shutdown", timeout)
    with _lock:
        _provider = None
        state.active = False
        state.children_of_unsampled_dropped = False
    return finished
