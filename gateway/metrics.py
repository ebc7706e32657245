"""Prometheus metrics at ``GET /metrics``: requests from each finished ``RequestRecord``, model and
engine state read from the backends when Prometheus scrapes.

``install_metrics(app, config)`` gives the app its own ``CollectorRegistry`` (never the
process-wide default, so that two apps in one process do not collide), registers a record
observer (``RequestMetrics.observe``) and adds the route. Nothing runs in the background: the
state gauges (``ModelStateCollector``) are computed per scrape from what the router and the
backends expose as plain numbers (``loaded``, ``health()``, ``load_seconds``, ``waiting``,
``stats.batch_size``, ``replica_health()``) — ``backends/`` never imports prometheus_client.

Label values are bounded: ``model`` is a configured public name (a record's served model, or
the configured model its requested name resolves to, else ``"none"``: never the raw name a
client sent), ``surface`` comes from ``surface_of_path``, ``status`` is the HTTP status, and the
error labels are codes from a fixed set. ``/metrics`` needs no API key (``api_keys.needs_key``
guards only the model and admin routes); turn it off with ``server.metrics: false``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, get_args

from fastapi import FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client import metrics as prometheus_metrics
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from backends.errors import ModelNotFoundError
from backends.protocol import Health, HealthStatus
from gateway.config import GatewayConfig
from gateway.request_record import GAP_BUCKETS, GapCounts, RequestRecord

if TYPE_CHECKING:
    from gateway.routing import ModelRouter

NO_MODEL = "none"  # the model label of a request no configured model served or was asked for

# Time to first token: 10 ms (a warm relay) to a minute (a long prompt on a queued CPU engine).
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0)
DURATION_BUCKETS = (*TTFT_BUCKETS[:-1], 60.0, 120.0, 300.0, 600.0)
# Inter-token latency: request_record.GAP_BUCKETS (1 ms to 2 s), counted by the record.

# Error codes (``GatewayError.code``) that count, by metric; any other code is not a label.
RATE_LIMIT_CODES = frozenset({"rate_limit_exceeded", "queue_full"})
BACKEND_FAILURE_CODES = frozenset({"upstream_error", "backend_unavailable", "backend_timeout"})


class RequestMetrics:
    """The request metrics of one app, observed from finished records (on the event loop)."""

    def __init__(self, registry: CollectorRegistry, resolve: Callable[[str], str | None]) -> None:
        self._resolve = resolve
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        self.requests = Counter(
            "llmgate_requests_total",
            "HTTP requests, by the model that served them (or was asked for), surface and status.",
            ["model", "surface", "status"],
            registry=registry,
        )
        self.ttft = Histogram(
            "llmgate_time_to_first_token_seconds",
            "From the request's arrival to its first output (token, relayed chunk, vectors).",
            ["model", "surface"],
            buckets=TTFT_BUCKETS,
            registry=registry,
        )
        self.duration = Histogram(
            "llmgate_request_duration_seconds",
            "From the request's arrival to the end of its response (end-to-end latency).",
            ["model", "surface"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.inter_token = GapHistogram(
            "llmgate_inter_token_latency_seconds",
            "Gaps between consecutive outputs of one response.",
            registry,
        )
        self.prompt_tokens = Counter(
            "llmgate_prompt_tokens_total", "Prompt tokens read.", ["model"], registry=registry
        )
        self.cached_tokens = Counter(
            "llmgate_prompt_tokens_cached_total",
            "Prompt tokens read from a prefix cache instead of evaluated (also counted in "
            "llmgate_prompt_tokens_total).",
            ["model"],
            registry=registry,
        )
        self.completion_tokens = Counter(
            "llmgate_completion_tokens_total",
            "Completion tokens generated.",
            ["model"],
            registry=registry,
        )
        self.rate_limited = Counter(
            "llmgate_rate_limit_rejections_total",
            "Requests refused with 429: a rate limit (rate_limit_exceeded) or a full engine "
            "queue (queue_full).",
            ["model", "reason"],
            registry=registry,
        )
        self.backend_failures = Counter(
            "llmgate_upstream_errors_total",
            "Requests that failed because the model's engine or upstream did (kind: "
            "upstream_error, backend_unavailable, backend_timeout).",
            ["model", "kind"],
            registry=registry,
        )

    def observe(self, record: RequestRecord) -> None:
        model = self._model_label(record)
        surface = record.surface
        child = self._child
        child(self.requests, model, surface, str(record.status)).inc()
        if record.duration is not None:
            child(self.duration, model, surface).observe(record.duration)
        if record.ttft is not None:
            child(self.ttft, model, surface).observe(record.ttft)
        if record.inter_token:
            self.inter_token.add(model, record.inter_token)
        if record.prompt_tokens:
            child(self.prompt_tokens, model).inc(record.prompt_tokens)
        if record.cached_tokens:
            child(self.cached_tokens, model).inc(record.cached_tokens)
        if record.completion_tokens:
            child(self.completion_tokens, model).inc(record.completion_tokens)
        code = record.error_type
        if code in RATE_LIMIT_CODES:
            self.rate_limited.labels(model, code).inc()
        elif record.status == 429:  # refused before dispatch (a limiter outside open_first)
            self.rate_limited.labels(model, "rate_limit_exceeded").inc()
        if code in BACKEND_FAILURE_CODES:
            self.backend_failures.labels(model, code).inc()

    def _child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, kept: label values are bounded, and ``labels()`` checks
        and locks on every call."""
        key = (id(metric), labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def _model_label(self, record: RequestRecord) -> str:
        if record.model is not None:
            return record.model
        if record.requested is not None:
            return self._resolve(record.requested) or NO_MODEL
        return NO_MODEL


class GapHistogram(Collector):
    """A histogram by ``model`` of the gaps between outputs, fed the counts each record kept
    (``GapCounts``, over ``GAP_BUCKETS``) once per request rather than one observation per
    gap; its samples are those of a prometheus_client ``Histogram`` with these buckets."""

    def __init__(self, name: str, documentation: str, registry: CollectorRegistry) -> None:
        self._name = name
        self._documentation = documentation
        self._by_model: dict[str, _Gaps] = {}
        registry.register(self)

    def add(self, model: str, gaps: GapCounts) -> None:
        totals = self._by_model.get(model)
        if totals is None:
            totals = self._by_model[model] = _Gaps(time.time())
        counts = totals.counts
        for index, count in enumerate(gaps.counts):
            if count:
                counts[index] += count
        totals.sum += gaps.sum

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self._name, self._documentation, labels=["model"])
        created = getattr(prometheus_metrics, "_use_created", True)  # as a Histogram does
        for model, totals in self._by_model.items():
            buckets, running = [], 0.0
            for bound, count in zip((*GAP_BUCKETS, math.inf), totals.counts, strict=True):
                running += count
                buckets.append((floatToGoString(bound), running))
            family.add_metric([model], buckets, totals.sum)
            if created:
                family.add_sample(f"{self._name}_created", {"model": model}, totals.created)
        yield family


class _Gaps:
    """One model's gap counts (the buckets are not cumulative here), sum and creation time."""

    __slots__ = ("counts", "created", "sum")

    def __init__(self, created: float) -> None:
        self.counts = [0] * (len(GAP_BUCKETS) + 1)
        self.sum = 0.0
        self.created = created


class _ModelResolver:
    """A requested name -> the configured public name it resolves to (None: not configured)."""

    def __init__(self, app: FastAPI) -> None:
        self._app = app

    def __call__(self, name: str) -> str | None:
        router: ModelRouter | None = getattr(self._app.state, "router", None)
        if router is None:
            return None
        try:
            return router.resolve(name).model
        except ModelNotFoundError:  # an unknown name is never a label
            return None


MODEL_STATES: tuple[str, ...] = get_args(HealthStatus)


class ModelStateCollector(Collector):
    """Per configured model, at scrape time: loaded and state, last load duration, requests in
    flight, engine queue depth and batch size, upstream replicas up. ``health`` is the
    router's ``health()`` taken just before (it is async; a collector is not)."""

    def __init__(self, router: ModelRouter, health: Mapping[str, Health]) -> None:
        self._router = router
        self._health = health

    def collect(self) -> Iterator[Metric]:
        loaded = GaugeMetricFamily(
            "llmgate_model_loaded", "1 when the model is loaded.", labels=["model", "backend"]
        )
        state = GaugeMetricFamily(
            "llmgate_model_state",
            f"1 for the model's current state ({', '.join(MODEL_STATES)}), else 0.",
            labels=["model", "state"],
        )
        load_seconds = GaugeMetricFamily(
            "llmgate_model_load_seconds",
            "How long the model's last load took.",
            labels=["model"],
        )
        in_flight = GaugeMetricFamily(
            "llmgate_requests_in_flight", "Requests being served now.", labels=["model"]
        )
        queue = GaugeMetricFamily(
            "llmgate_queue_depth",
            "Requests admitted by the engine but not started.",
            labels=["model"],
        )
        batch = GaugeMetricFamily(
            "llmgate_batch_size", "Sequences the engine decodes together now.", labels=["model"]
        )
        replicas = GaugeMetricFamily(
            "llmgate_upstream_replica_up",
            "1 when the upstream replica takes requests (healthy, not cooling down).",
            labels=["model", "replica"],
        )
        for name, health in self._health.items():
            backend: Any = self._router.resolve(name)
            loaded.add_metric([name, str(getattr(backend, "kind", "unknown"))], backend.loaded)
            for value in MODEL_STATES:
                state.add_metric([name, value], float(health.status == value))
            in_flight.add_metric([name], self._router.activity.in_flight(name))
            _add_number(load_seconds, name, getattr(backend, "load_seconds", None))
            _add_number(queue, name, getattr(backend, "waiting", None))
            stats = getattr(backend, "stats", None)
            _add_number(batch, name, getattr(stats, "batch_size", None))
            replica_health = getattr(backend, "replica_health", None)
            if callable(replica_health):
                for url, up in replica_health().items():
                    replicas.add_metric([name, url], float(up))
        yield from (loaded, state, load_seconds, in_flight, queue, batch, replicas)


def _add_number(family: GaugeMetricFamily, model: str, value: object) -> None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        family.add_metric([model], float(value))


class _Scrape(Collector):
    """The app's registry and this scrape's model state, as one collector to encode."""

    def __init__(self, parts: Iterable[Collector]) -> None:
        self._parts = list(parts)

    def collect(self) -> Iterator[Metric]:
        for part in self._parts:
            yield from part.collect()


def install_metrics(app: FastAPI, config: GatewayConfig) -> None:
    """Give ``app`` its registry (``app.state.metrics``), the record observer and ``GET
    /metrics`` — unless ``server.metrics`` is false. Call it after
    ``app.state.record_observers`` exists."""
    if not config.server.metrics:
        return
    registry = CollectorRegistry(auto_describe=True)
    metrics = RequestMetrics(registry, _ModelResolver(app))
    app.state.metrics = metrics
    app.state.record_observers.append(metrics.observe)

    async def scrape(request: Request) -> Response:
        router: ModelRouter = request.app.state.router
        parts: list[Collector] = [registry, ModelStateCollector(router, await router.health())]
        encode, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(encode(_Scrape(parts)), media_type=content_type)

    app.add_api_route("/metrics", scrape, methods=["GET"], include_in_schema=False)
