"""A real Prometheus server that discovers the test cluster's pods and Services.

The scrape configuration is the one a cluster's Prometheus would use for Rheostat:
pod service discovery through the apiserver, keep pods annotated
``prometheus.io/scrape: "true"``, scrape ``podIP:prometheus.io/port``, and turn the
``rheostat.dev/*`` pod labels into ``study``/``trial``/``role`` target labels (see
docs/contracts.md). A second job scrapes the endpoints of Services annotated the
same way (the chart's metrics Service). The 1 s interval keeps metric-driven tests
short.
"""

from __future__ import annotations

import urllib.request
from pathlib import Path
from typing import Any

import yaml

from tests.cluster.controlplane import ApiEndpoint, wait_until
from tests.cluster.procs import ManagedProcess, free_port

SCRAPE_INTERVAL = "1s"


def scrape_config(endpoint: ApiEndpoint) -> dict[str, Any]:
    """The whole prometheus.yml, as data."""
    return {
        "global": {
            "scrape_interval": SCRAPE_INTERVAL,
            "scrape_timeout": SCRAPE_INTERVAL,
            "evaluation_interval": SCRAPE_INTERVAL,
        },
        "scrape_configs": [
            {
                "job_name": "kubernetes-pods",
                "kubernetes_sd_configs": [
                    {
                        "role": "pod",
                        "api_server": endpoint.server,
                        "authorization": {"credentials_file": str(endpoint.token_file)},
                        "tls_config": {"ca_file": str(endpoint.ca_file)},
                    }
                ],
                "relabel_configs": [
                    {
                        "source_labels": ["__meta_kubernetes_pod_annotation_prometheus_io_scrape"],
                        "regex": "true",
                        "action": "keep",
                    },
                    {
                        "source_labels": ["__meta_kubernetes_pod_phase"],
                        "regex": "Succeeded|Failed",
                        "action": "drop",
                    },
                    {
                        "source_labels": [
                            "__meta_kubernetes_pod_ip",
                            "__meta_kubernetes_pod_annotation_prometheus_io_port",
                        ],
                        "regex": r"(.+);(\d+)",
                        "replacement": "$1:$2",
                        "target_label": "__address__",
                        "action": "replace",
                    },
                    {
                        "source_labels": ["__meta_kubernetes_pod_annotation_prometheus_io_path"],
                        "regex": "(.+)",
                        "target_label": "__metrics_path__",
                        "action": "replace",
                    },
                    {
                        "regex": "__meta_kubernetes_pod_label_rheostat_dev_(.+)",
                        "action": "labelmap",
                    },
                    {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
                    {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
                ],
            },
            _service_endpoints_job(endpoint),
        ],
    }


def _service_endpoints_job(endpoint: ApiEndpoint) -> dict[str, Any]:
    """Scrape the pods behind Services annotated ``prometheus.io/scrape: "true"``.

    What a cluster Prometheus does for a chart's metrics Service (the Helm chart's
    ``metrics.service.annotations``), found through EndpointSlices: each ready
    endpoint is a target labelled with its Service. ``honor_labels`` keeps the
    operator's own ``namespace`` label (the study's) instead of renaming it, as the
    chart's values.yaml asks of such a job. No Service of the integration tests
    carries the annotation, so they see only the pod job's targets.
    """
    return {
        "job_name": "kubernetes-service-endpoints",
        "honor_labels": True,
        "kubernetes_sd_configs": [
            {
                "role": "endpointslice",
                "api_server": endpoint.server,
                "authorization": {"credentials_file": str(endpoint.token_file)},
                "tls_config": {"ca_file": str(endpoint.ca_file)},
            }
        ],
        "relabel_configs": [
            {
                "source_labels": ["__meta_kubernetes_service_annotation_prometheus_io_scrape"],
                "regex": "true",
                "action": "keep",
            },
            {
                "source_labels": ["__meta_kubernetes_endpointslice_endpoint_conditions_ready"],
                "regex": "true",
                "action": "keep",
            },
            {
                "source_labels": [
                    "__address__",
                    "__meta_kubernetes_service_annotation_prometheus_io_port",
                ],
                "regex": r"([^:]+)(?::\d+)?;(\d+)",
                "replacement": "$1:$2",
                "target_label": "__address__",
                "action": "replace",
            },
            {
                "source_labels": ["__meta_kubernetes_service_annotation_prometheus_io_path"],
                "regex": "(.+)",
                "target_label": "__metrics_path__",
                "action": "replace",
            },
            {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
            {"source_labels": ["__meta_kubernetes_service_name"], "target_label": "service"},
            {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
        ],
    }


def start_prometheus(
    binary: Path, endpoint: ApiEndpoint, state_dir: Path, die_with_parent: bool, timeout: float
) -> tuple[ManagedProcess, str]:
    """Start Prometheus on a free loopback port; return the process and its base URL."""
    folder = state_dir / "prometheus"
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "prometheus.yml"
    config.write_text(yaml.safe_dump(scrape_config(endpoint), sort_keys=False))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = ManagedProcess(
        "prometheus",
        [
            str(binary),
            f"--config.file={config}",
            f"--storage.tsdb.path={folder / 'data'}",
            "--storage.tsdb.retention.time=1d",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        state_dir / "logs" / "prometheus.log",
        cwd=folder,
        die_with_parent=die_with_parent,
    )
    proc.start()

    def ready() -> bool:
        with urllib.request.urlopen(url + "/-/ready", timeout=2) as r:
            return bool(r.status == 200)

    wait_until("prometheus", ready, timeout, proc.check_alive)
    return proc, url
