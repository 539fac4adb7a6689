"""Prometheus metrics, all on one registry per application (tests build several apps)."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from relay.store.outage import Outage


@dataclass(frozen=True, slots=True)
class Metrics:
    """Every metric of one application."""

    registry: CollectorRegistry
    http_requests: Counter
    http_latency: Histogram
    accounts: Gauge
    webhook_deliveries: Counter
    webhook_attempts: Counter
    webhook_queue: Gauge
    webhook_latency: Histogram
    cluster_nodes: Gauge
    cluster_work: Gauge
    store_up: Gauge
    store_outages: Counter
    imap_push_checks: Counter

    @classmethod
    def create(cls) -> Metrics:
        registry = CollectorRegistry()
        return cls(
            registry=registry,
            http_requests=Counter(
                "relay_http_requests",
                "API requests by route and status",
                ["method", "route", "status"],
                registry=registry,
            ),
            http_latency=Histogram(
                "relay_http_request_seconds",
                "API response time",
                ["route"],
                registry=registry,
                buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            ),
            accounts=Gauge("relay_accounts", "Accounts by state", ["state"], registry=registry),
            cluster_nodes=Gauge(
                "relay_cluster_nodes",
                "Registered nodes by liveness (alive: beating and not leaving)",
                ["alive"],
                registry=registry,
            ),
            cluster_work=Gauge(
                "relay_cluster_node_work",
                "Per node: accounts watched, deliveries in flight, messages being sent",
                ["node", "kind"],
                registry=registry,
            ),
            store_up=Gauge(
                "relay_store_up",
                "1 while the database answers, 0 during an outage (down, restarting, disk full)",
                registry=registry,
            ),
            store_outages=Counter(
                "relay_store_outages",
                "Database outages seen by this node (each logged once as 'store unavailable')",
                registry=registry,
            ),
            imap_push_checks=Counter(
                "relay_imap_push_checks",
                "IDLE push checks (imap.push_check), by whether they found a change the server"
                " had not pushed",
                ["found"],
                registry=registry,
            ),
            webhook_deliveries=Counter(
                "relay_webhook_deliveries",
                "Deliveries finished, by outcome (delivered, failed)",
                ["outcome"],
                registry=registry,
            ),
            webhook_attempts=Counter(
                "relay_webhook_attempts",
                "Delivery attempts by result (delivered, pending = retry later, failed)",
                ["result"],
                registry=registry,
            ),
            webhook_queue=Gauge(
                "relay_webhook_queue",
                "Deliveries in the queue by status",
                ["status"],
                registry=registry,
            ),
            webhook_latency=Histogram(
                "relay_webhook_delivery_seconds",
                "From event stored to webhook delivered",
                registry=registry,
                buckets=(
                    0.005,
                    0.01,
                    0.025,
                    0.05,
                    0.1,
                    0.25,
                    0.5,
                    1,
                    2.5,
                    5,
                    10,
                    30,
                    60,
                    300,
                    3600,
                ),
            ),
        )

    def watch_store(self, outage: Outage) -> None:
        """Keep ``relay_store_up`` and ``relay_store_outages`` in step with the store."""

        def changed(down: bool) -> None:
            self.store_up.set(0 if down else 1)
            if down:
                self.store_outages.inc()

        self.store_up.set(0 if outage.down else 1)
        outage.listeners.append(changed)
