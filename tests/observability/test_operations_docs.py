"""The README's metric table, its alert rules and the Grafana dashboard name real metrics."""

from __future__ import annotations

import json
import re
from pathlib import Path

from jobwheel.server.observability.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "jobwheel.json"
METRIC_NAME = re.compile(r"\b(?:jobwheel|grpc_server)_[a-z_]+\b")
_SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_sum", "_count"),
    "gauge": ("",),
}


def families() -> dict[str, str]:
    """Exported metric name (counters with _total) -> type."""
    out = {}
    for family in Metrics().registry.collect():
        name = family.name + ("_total" if family.type == "counter" else "")
        out[name] = family.type
    return out


def sample_names() -> set[str]:
    """Every series name a query may use."""
    names = set()
    for family in Metrics().registry.collect():
        names |= {family.name + suffix for suffix in _SUFFIXES[family.type]}
    return names


def operations_section() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("## Operations")
    return text[start : text.index("\n## ", start + 1)]


def test_readme_table_lists_every_metric_with_its_type() -> None:
    rows = re.findall(r"^\| `([a-z_]+)` \| (\w+) \|([^|]*)\|", operations_section(), re.M)
    documented = {name: kind for name, kind, _ in rows}
    assert documented == families()
    labels = {name: set(re.findall(r"`(\w+)`", cell)) for name, _, cell in rows}
    metrics = Metrics()
    for family in metrics.registry.collect():
        name = family.name + ("_total" if family.type == "counter" else "")
        [metric] = [m for m in vars(metrics).values() if getattr(m, "_name", "") == family.name]
        assert labels[name] == set(metric._labelnames), name


def test_alert_rules_use_existing_metrics() -> None:
    rules = operations_section().split("```yaml", 1)[1].split("```", 1)[0]
    used = set(METRIC_NAME.findall(rules))
    assert used and used <= sample_names(), used - sample_names()


def test_dashboard_queries_existing_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {name for expr in exprs for name in METRIC_NAME.findall(expr)}
    assert used <= sample_names(), f"not exported: {sorted(used - sample_names())}"
    # and it shows every metric family
    shown = {re.sub(r"_(bucket|sum|count)$", "", n) for n in used}
    assert shown == set(families()), set(families()) - shown
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
