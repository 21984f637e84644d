"""A live switch of ``gateway serve`` to a newly installed bundle (numpy + LiteRT + ``cryptography``; no torch).

``serve --follow`` watches the bundle path it was given, typically ``ROOT/current`` of :mod:`gateway.install`:
between two batches, at most once per ``interval`` seconds, it resolves the path, and when the target changed it
verifies the new bundle (the signature with the pinned public key when one is given, then :func:`load_bundle`),
checks that it reads the same input (:func:`contract_difference`) and is not an older release, builds its model,
and hands it to the service, which scores the next batch with it. A batch is scored by one model, so no flow is
lost or scored twice across the switch, and each verdict line names the model version that made it. A bundle
that fails any check is refused with one logged error line and the service keeps its model; the same target is
not tried again until the path points elsewhere.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from gateway.bundle import Bundle, BundleError, load_bundle

log = logging.getLogger(__name__)


def open_bundle(path: str | Path, public_key: str | Path | None = None) -> Bundle:
    """The bundle at ``path``: its signature verified with ``public_key`` first when one is pinned."""
    if public_key is not None:
        from gateway.signing import verify_bundle_signature

        verify_bundle_signature(path, public_key)
    return load_bundle(path)


def input_contract(bundle: Bundle) -> dict[str, object]:
    """What a running service relies on across a switch: the gateway input, the source columns the pipeline reads
    and, for host-graph bundles, the windowing (the open windows were cut by it)."""
    contract: dict[str, object] = {"gateway_input": bundle.gateway_input,
                                   "input_columns": list(bundle.manifest["features"]["input_columns"])}  # fmt: skip
    if bundle.gateway_input == "host_graphs":
        contract["graph.settings"] = dict(bundle.manifest["graph"]["settings"])
    return contract


def contract_difference(old: Bundle, new: Bundle) -> str | None:
    """Why ``new`` cannot take over from ``old`` mid-stream (a one-line reason), or None when it can."""
    before, after = input_contract(old), input_contract(new)
    for key in before:
        if before[key] != after.get(key):
            if key == "input_columns":
                removed = [c for c in before[key] if c not in after[key]]
                added = [c for c in after[key] if c not in before[key]]
                return (f"its input columns differ (removed {', '.join(removed) or 'none'}; added "
                        f"{', '.join(added) or 'none'}; or reordered)")  # fmt: skip
            return f"its {key} differs ({before[key]!r} -> {after.get(key)!r})"
    return None


class BundleFollower:
    """Watches a bundle path for a new target and returns a verified (bundle, model) to switch to."""

    def __init__(self, path: str | Path, current: Bundle, make_model: Callable[[Bundle], object],
                 public_key: str | Path | None = None, interval: float = 1.0) -> None:  # fmt: skip
        self.path, self.current, self.make_model = Path(path), current, make_model
        self.public_key, self.interval = public_key, float(interval)
        self.target = os.path.realpath(current.path)
        self.refused_target: str | None = None
        self.refusals: list[dict] = []
        self._next = time.monotonic() + self.interval

    def poll(self, force: bool = False) -> tuple[str, Bundle, object] | None:
        """(target, bundle, model) when the path now points at another bundle that passes every check; None
        otherwise (also when the last look was less than ``interval`` seconds ago, unless ``force``). The caller
        switches and then calls :meth:`commit`, or :meth:`refuse` if the service cannot take it."""
        now = time.monotonic()
        if not force and now < self._next:
            return None
        self._next = now + self.interval
        target = os.path.realpath(self.path)
        if target in (self.target, self.refused_target):
            return None
        try:
            bundle = open_bundle(target, self.public_key)
            if bundle.release < self.current.release:
                raise BundleError(f"release {bundle.release} is older than the served release "
                                  f"{self.current.release}")  # fmt: skip
            difference = contract_difference(self.current, bundle)
            if difference is not None:
                raise BundleError(f"input contract differs from the served bundle's: {difference}")
            model = self.make_model(bundle)
        except (BundleError, ValueError, OSError) as err:
            self.refuse(target, err)
            return None
        return target, bundle, model

    def commit(self, target: str, bundle: Bundle) -> None:
        """The service now serves ``bundle`` (from ``target``)."""
        self.target, self.current, self.refused_target = target, bundle, None

    def refuse(self, target: str, err: Exception) -> None:
        """Log and record why ``target`` was refused; it is not tried again until the path points elsewhere."""
        self.refused_target = target
        reason = " ".join(str(err).split())
        self.refusals.append({"target": target, "reason": reason})
        log.error("refused to switch to %s: %s; still serving model version %s", target, reason,
                  self.current.model_version)  # fmt: skip


def poll_switch(service) -> None:
    """Between two batches: switch ``service`` (a verdict service with ``follower``, ``bundle``, ``report`` and
    ``switch_to(bundle, model)``, which raises :class:`BundleError` if it cannot take the bundle) to the
    follower's new bundle, if there is one, and record the switch."""
    follower: BundleFollower | None = getattr(service, "follower", None)
    if follower is None:
        return
    found = follower.poll()
    if found is None:
        return
    target, bundle, model = found
    old = service.bundle.model_version
    try:
        service.switch_to(bundle, model)
    except BundleError as err:
        follower.refuse(target, err)
        return
    follower.commit(target, bundle)
    service.report.switches.append({"from": old, "to": bundle.model_version, "release": bundle.release,
                                    "after_scored": service.report.scored, "target": target})  # fmt: skip
    log.info("switched from model version %s to %s (release %d, %s) after %d scored flows", old,
             bundle.model_version, bundle.release, target, service.report.scored)  # fmt: skip
