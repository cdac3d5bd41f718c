"""Reading the backend's Prometheus text exposition in tests."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    """Every sample of a text exposition: (sample name, its labels) -> value."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(scraped: dict, name: str, **labels) -> float:
    """The sum of the samples named `name` whose labels include `labels` (0 when there is none)."""
    wanted = set(labels.items())
    return sum(v for (sample, found), v in scraped.items() if sample == name and wanted <= found)


def requests_by_route_and_status(scraped: dict) -> dict[tuple[str, str], float]:
    """sam2plus_requests_total as (route, status) -> count, methods summed."""
    counts: dict[tuple[str, str], float] = {}
    for (name, labels), count in scraped.items():
        if name == "sam2plus_requests_total":
            key = (dict(labels)["route"], dict(labels)["status"])
            counts[key] = counts.get(key, 0) + count
    return counts
