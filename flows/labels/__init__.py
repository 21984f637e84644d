"""Training labels for a gateway's own traffic: live flows carry no verdict, so labels come from evidence.

* :mod:`flows.labels.evidence` reads evidence files (an operator's decisions on host verdicts as JSON lines,
  Zeek ``notice.log``, Suricata ``eve.json`` alerts) into :class:`Evidence` items, with the readers' bad-record
  policy (``error``: one line naming file, line and field; ``skip``: counted per reason);
* :mod:`flows.labels.apply` labels the flows each item covers and drops (or, only when asked, keeps as benign)
  the flows no evidence covers, counting every step.
"""

from flows.labels.apply import UNLABELLED_POLICIES, LabelCounts, apply_evidence
from flows.labels.evidence import Evidence, EvidenceSet, read_evidence, read_evidence_files

__all__ = ["UNLABELLED_POLICIES", "Evidence", "EvidenceSet", "LabelCounts", "apply_evidence", "read_evidence",
           "read_evidence_files"]  # fmt: skip
