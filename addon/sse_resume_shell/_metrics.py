"""The Prometheus endpoint (``sse_metrics_port``): the counters of ``_counters``, served on their own port."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from mitmproxy import exceptions

from sse_resume_shell._counters import readings
from sse_resume_shell._features import feature
from sse_resume_shell._shell import Shell

if TYPE_CHECKING:  # imported only when an option asks for it (see FEATURES)
    from prometheus_client.core import Metric

__all__ = ["MetricsCollector", "SSEMetrics"]

log = logging.getLogger("sse_resume")


class MetricsCollector:
    """Reads the addon's counters when Prometheus scrapes: nothing is counted twice, nothing on the hot path.

    Labels carry no payload, id or credential: only eviction reasons.
    """

    def __init__(self, shell: Shell) -> None:
        self.shell = shell

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        for counter, value in readings(self.shell):
            if counter.metric is None:
                continue
            name = f"sse_resume_{counter.metric}"
            family = CounterMetricFamily if counter.kind == "counter" else GaugeMetricFamily
            if isinstance(value, dict):
                labelled = family(name, counter.doc, labels=["reason"])
                for reason, count in value.items():
                    labelled.add_metric([reason], count)
                yield labelled
            else:
                yield family(name, counter.doc, value=int(value) if isinstance(value, bool) else value)


class SSEMetrics:
    """Serves the metrics endpoint while ``sse_metrics_port`` asks for one (prometheus_client only then)."""

    def __init__(self, shell: Shell) -> None:
        self.shell = shell
        self._metrics: tuple[Any, Any] | None = None  # (server, thread) of the Prometheus endpoint
        self._metrics_at: tuple[str, int] | None = None

    def configure(self, updated: set[str]) -> None:
        if any(name.startswith("sse_") for name in updated):
            self._serve_metrics()

    def _serve_metrics(self) -> None:
        settings = self.shell.settings
        wanted = (settings.metrics_host, settings.metrics_port) if settings.metrics_port else None
        if wanted == self._metrics_at:
            return
        self._stop_metrics()
        if wanted is not None:
            prometheus = feature("metrics_port")
            registry = prometheus.CollectorRegistry(auto_describe=False)
            registry.register(MetricsCollector(self.shell))
            try:
                self._metrics = prometheus.start_http_server(wanted[1], addr=wanted[0], registry=registry)
            except OSError as e:
                raise exceptions.OptionsError(  # type: ignore[no-untyped-call]
                    f"sse_metrics_port: cannot listen on {wanted[0]}:{wanted[1]}: {e.strerror or e}"
                ) from None
            log.info("sse-resume: Prometheus metrics on http://%s:%d/metrics", *wanted)
        self._metrics_at = wanted

    def _stop_metrics(self) -> None:
        if self._metrics is not None:
            server, thread = self._metrics
            server.shutdown()
            server.server_close()
            thread.join(5)
            self._metrics = None
        self._metrics_at = None

    def done(self) -> None:
        self._stop_metrics()
