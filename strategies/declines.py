"""Replies in which a client declines a round (its privacy budget is spent): left out of every aggregation, kept
in the reports. A declined reply holds one ConfigRecord ``declined`` (``reason`` and the privacy spent) and no
weights; it is neither an error nor a malformed update."""

from __future__ import annotations

from collections.abc import Iterable

from flwr.app import Message

DECLINED = "declined"


def is_declined(reply: Message) -> bool:
    return not reply.has_error() and DECLINED in reply.content.config_records and not reply.content.array_records


def without_declined(replies: Iterable[Message]) -> list[Message]:
    """The replies that offer an update (or an error): the declined ones removed."""
    return [reply for reply in replies if not is_declined(reply)]


def declined_row(reply: Message) -> dict:
    """What the report keeps of a declined reply: its reason and numbers."""
    return {"declined": str(reply.content[DECLINED].get("reason", "")),
            **{k: v for k, v in reply.content[DECLINED].items() if k != "reason"}}  # fmt: skip
