"""docs/metrics.md: every metric the daemons export is described, and every metric it names exists."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from prometheus_client import REGISTRY

from relate.runtime import metrics

DOC = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"


def exported() -> set[str]:
    """The family names of Relate Mail's own metrics (counters without their _total)."""
    assert metrics.SMTP_ACCEPTED is not None  # the module defines them when imported
    return {family.name for family in REGISTRY.collect() if family.name.startswith("relate_")}


def named_in_doc() -> set[str]:
    """Every relate_* name the page uses, as a family name."""
    names = set(re.findall(r"\brelate_[a-z0-9_]+", DOC.read_text(encoding="utf-8")))
    return {re.sub(r"_(total|bucket|count|sum)$", "", name) for name in names}


def test_every_metric_is_documented() -> None:
    """A metric the daemons export but docs/metrics.md does not describe fails here."""
    text = DOC.read_text(encoding="utf-8")
    missing = [name for name in sorted(exported()) if f"`{name}" not in text]
    assert missing == []


def test_the_doc_names_only_real_metrics() -> None:
    """The tables, scrape config and alert rules name only metrics that exist (a typo in an alert never fires)."""
    assert named_in_doc() - exported() == set()


def test_the_examples_are_valid_yaml_with_the_expected_shape() -> None:
    """The scrape configuration and the alert rules parse, and every alert has an expression and a summary."""
    blocks = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)]
    scrape, rules = blocks
    targets = [t for c in scrape["scrape_configs"][0]["static_configs"] for t in c["targets"]]
    assert targets == [f"127.0.0.1:{port}" for port in range(9461, 9466)]
    alerts = rules["groups"][0]["rules"]
    assert {a["alert"] for a in alerts} >= {
        "RelateDaemonDown",
        "RelateQueueBacklogOld",
        "RelateDeliveryFailures",
        "RelateAuthFailureSpike",
        "RelateEventLoopLag",
    }
    assert all(a["expr"] and a["annotations"]["summary"] for a in alerts)
