"""Reading /metrics text: sample values, and that no label carries anything personal."""

from __future__ import annotations

import re

from prometheus_client.parser import text_string_to_metric_families

EMAIL = re.compile(r"[^\s\"@]+@[^\s\"@]+")

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)


def value(text: str, sample: str, **labels: str) -> float:
    """Sum of the samples called `sample` whose labels include `labels`."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


def label_values(text: str) -> set[str]:
    # Test task queues are named after a random uuid (`sso` in production): not a person's.
    return {
        v
        for family in text_string_to_metric_families(text)
        for s in family.samples
        for k, v in s.labels.items()
        if k != "task_queue"
    }


def assert_nothing_personal(text: str, *known: str) -> None:
    """No label value looks like an email address or a uuid; the staff ids and addresses
    the test used appear nowhere."""
    for found in label_values(text):
        assert not EMAIL.search(found), found
        assert not UUID.search(found), found
    for secret in known:
        assert secret not in text
