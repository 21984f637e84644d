"""A client's feature statistics as Flower records (counts, sums, sums of squares, category counts; no rows).

Wire format of a query reply (decoded by ``fl_server.statistics``):

* ``"stats"``: MetricRecord ``{"n": int, "sum": [float], "sumsq": [float]}`` (numeric features, in order);
* ``"features"``: ConfigRecord ``{"numeric": [str], "categorical": [str]}``;
* ``"category-values"``: ConfigRecord ``{column: [value, ...]}``; ``"category-counts"``: MetricRecord
  ``{column: [count, ...]}`` (same order as the values);
* ``"node"``: ConfigRecord ``{"partition-id": int}`` (-1 on a real gateway), which the server uses only to rank
  nodes for seeded sampling and ordered aggregation.
"""

from __future__ import annotations

from flwr.app import ConfigRecord, MetricRecord, RecordDict

from flows.pipeline import feature_statistics
from flows.table import FlowTable


def statistics_records(table: FlowTable, log_transform: bool, partition_id: int = -1) -> RecordDict:
    """The sufficient statistics of ``table`` (see :func:`flows.pipeline.feature_statistics`) as records."""
    stats = feature_statistics(table.frame, table.numeric_features, table.categorical_features, log_transform)
    values, counts = {}, {}
    for column in table.categorical_features:
        items = sorted(stats["categories"][column].items())
        values[column] = [str(v) for v, _ in items]
        counts[column] = [int(c) for _, c in items]
    return RecordDict({
        "stats": MetricRecord({"n": int(stats["n"]), "sum": [float(x) for x in stats["sum"]],
                               "sumsq": [float(x) for x in stats["sumsq"]]}),
        "features": ConfigRecord({"numeric": list(table.numeric_features),
                                  "categorical": list(table.categorical_features)}),
        "category-values": ConfigRecord(values),
        "category-counts": MetricRecord(counts),
        "node": ConfigRecord({"partition-id": int(partition_id)}),
    })  # fmt: skip
