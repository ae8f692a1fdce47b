"""List every alert whose ``lastUpdateTime`` falls in ``[start, end)``.

The service's paging facts (see docs/DESIGN.md and the API notes):

* ``$top`` is at most 10,000 and, with ``$top``, no ``@odata.nextLink`` comes back, so
  the client pages by itself. Deep ``$skip`` is slow and shifts when alerts change, so
  we advance a cursor on ``lastUpdateTime`` instead::

      $filter=lastUpdateTime ge <cursor> and lastUpdateTime lt <end>
      $orderby=lastUpdateTime asc   $top=<page_size>   $skip=<only within one timestamp>

* Timestamps carry up to 7 fractional digits (100 ns). Python's datetime keeps only
  microseconds, so the cursor is an integer count of 100 ns ticks since the epoch and
  filter literals are written from it digit for digit.

Why nothing is lost or repeated while alerts are updated during paging
----------------------------------------------------------------------
An update only moves an alert's ``lastUpdateTime`` forward (to "now", which is at or past
the end of any closed interval). Take the cursor ``C`` and the result set
``{alerts with C <= t < end}`` ordered by ``t``:

* An alert already listed (``t < C``) that moves: it leaves the part of the ordering we
  have not read yet untouched. If its new time is still before ``end`` it is listed again
  later and deduplication by id keeps the newer version; if it moved to ``>= end`` the
  next interval lists the new version (one row per alert version, see the lake schema).
* An alert not yet listed (``t >= C``) that moves: it is read at its new position if that
  is before ``end``, otherwise the next interval reads it. Either way exactly once.
* The only dangerous place is the group of alerts sharing the cursor timestamp ``C``,
  because ``$skip`` counts positions inside it: if an alert we already read there moves
  away, every later position shifts down by one and a skip would jump over an alert we
  never saw. Two rules close that hole:

  1. After a page whose last timestamp ``L`` is new, the ``k`` alerts at ``L`` are simply
     read again from ``$skip=0`` (``ge L`` includes them; dedup drops the repeats) as
     long as ``k <= page_size // 2``. Nothing is skipped, so nothing can be jumped over,
     whatever order the service gives equal timestamps.
  2. Only a group too large for that (a bulk update stamping thousands of alerts with
     one time) is read with ``$skip``, with a one-item overlap and a check. The alerts
     we have read at ``C`` are always a prefix of the group's current order (we read it
     front to back; alerts only leave it). A request with ``$skip=S`` must therefore
     return, first, an alert we have already read: then positions ``0..S`` are all read
     and nothing unread was skipped. If the first alert is unread, some read alerts have
     left and the prefix is shorter than ``S+1``: the request is repeated with ``$skip``
     backed off by half a page (down to 0), where the check passes again, and paging
     goes on. Churn of up to half a page per request still makes progress.

  A full page at ``C`` that brings no alert we had not read means the service does not
  honour ``$skip`` (or the filter); that is an error, never an endless loop. What the
  check cannot detect is an alert *inserted* at the past timestamp ``C`` or a service
  that reorders equal timestamps between requests inside a group larger than half a
  page; neither happens when updates are stamped with the current time and equal
  timestamps keep a stable order.

If the service does send ``@odata.nextLink``, it is followed to its end instead.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Protocol

from mde_pipeline.api.errors import MdeMalformedResponseError
from mde_pipeline.common.log_text import for_log
from mde_pipeline.common.timestamps import format_timestamp, parse_timestamp, to_ticks

log = logging.getLogger(__name__)

MAX_PAGE_SIZE = 10_000  # the service's $top ceiling
ORDER_BY = "lastUpdateTime asc"


def interval_filter(cursor: int, end: int) -> str:
    return f"lastUpdateTime ge {format_timestamp(cursor)} and lastUpdateTime lt {format_timestamp(end)}"


# --------------------------------------------------------------------------- listing


class AlertsApi(Protocol):
    """The part of :class:`mde_pipeline.api.client.MdeClient` the listing needs."""

    @property
    def tenant_id(self) -> str: ...

    def list_alerts_page(
        self,
        *,
        filter: str | None,
        top: int,
        skip: int = 0,
        orderby: str | None = ORDER_BY,
        expand: str | None = None,
    ) -> dict: ...

    def get_next_link(self, url: str) -> dict: ...


class ListingNotAdvancingError(RuntimeError):
    """The service's answers do not let the listing move forward (it ignores ``$skip``
    or the filter, or repeats an ``@odata.nextLink``)."""


@dataclass
class ListingStats:
    requests: int = 0
    items_received: int = 0  # including re-reads and overlaps
    repeats_dropped: int = 0  # same alert version received again
    versions_superseded: int = 0  # same alert id received again with a newer lastUpdateTime
    group_resyncs: int = 0  # an equal-timestamp group changed under $skip; request repeated with less skip
    next_link_pages: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(vars(self))


@dataclass
class AlertListing:
    """What :func:`list_interval` found: alerts sorted by (lastUpdateTime, id)."""

    start: int  # ticks, inclusive
    end: int  # ticks, exclusive
    alerts: list[dict[str, Any]]
    stats: ListingStats
    listed_at: datetime  # when the last page was received (UTC)
    tenant_id: str  # the Entra ID tenant the alerts belong to (the client's)

    def as_document(self) -> dict[str, Any]:
        """JSON-serialisable form: what the list task stages for publish."""
        return {
            "tenant_id": self.tenant_id,
            "start": format_timestamp(self.start),
            "end": format_timestamp(self.end),
            "listed_at": self.listed_at.isoformat(),
            "stats": self.stats.as_dict(),
            "alerts": self.alerts,
        }


@dataclass
class _Item:
    alert: dict[str, Any]
    id: str
    ticks: int


@dataclass
class _Collected:
    """Alerts by id, keeping the newest version (highest lastUpdateTime)."""

    stats: ListingStats
    by_id: dict[str, _Item] = field(default_factory=dict)

    def add(self, items: list[_Item]) -> None:
        for item in items:
            held = self.by_id.get(item.id)
            if held is None:
                self.by_id[item.id] = item
            elif item.ticks > held.ticks:
                self.by_id[item.id] = item
                self.stats.versions_superseded += 1
            else:
                self.stats.repeats_dropped += 1

    def sorted_alerts(self) -> list[dict[str, Any]]:
        return [item.alert for item in sorted(self.by_id.values(), key=lambda item: (item.ticks, item.id))]


def list_interval(
    client: AlertsApi,
    start: datetime | str,
    end: datetime | str,
    page_size: int = MAX_PAGE_SIZE,
) -> AlertListing:
    """List ``[start, end)`` with the lastUpdateTime cursor described in the module doc."""
    start_ticks, end_ticks = to_ticks(start), to_ticks(end)
    if end_ticks <= start_ticks:
        raise ValueError(
            f"empty or reversed interval: {format_timestamp(start_ticks)} .. {format_timestamp(end_ticks)}"
        )
    if not 2 <= page_size <= MAX_PAGE_SIZE:
        # The one-alert overlap of rule 2 needs room for at least one new alert per page.
        raise ValueError(f"page_size must be between 2 and {MAX_PAGE_SIZE}, got {page_size}")

    stats = ListingStats()
    collected = _Collected(stats)
    cursor = start_ticks
    skip = 0
    read_at_cursor: set[str] = set()  # ids read at `cursor`: a prefix of that group's order

    while True:
        page = client.list_alerts_page(
            filter=interval_filter(cursor, end_ticks), top=page_size, skip=skip, orderby=ORDER_BY
        )
        stats.requests += 1
        items = _page_items(page, start_ticks, end_ticks)
        stats.items_received += len(items)

        next_link = page.get("@odata.nextLink")
        if next_link:
            collected.add(items)
            _follow_next_links(client, next_link, collected, start_ticks, end_ticks)
            break

        _check_order(items, cursor)
        if skip and (not items or items[0].ticks != cursor or items[0].id not in read_at_cursor):
            # Read alerts left the group at `cursor`: this skip may jump over unread ones.
            stats.group_resyncs += 1
            log.info(
                "alerts at %s changed under $skip=%d; backing off to re-find the last one read",
                format_timestamp(cursor),
                skip,
            )
            skip = max(0, skip - page_size // 2)
            continue

        new_at_cursor = sum(1 for item in items if item.ticks == cursor and item.id not in read_at_cursor)
        collected.add(items)
        if len(items) < page_size:
            break  # the service had no more than this

        last = items[-1]
        if last.ticks > cursor:
            group = [item.id for item in items if item.ticks == last.ticks]
            cursor = last.ticks
            if len(group) <= page_size // 2:
                skip, read_at_cursor = 0, set()  # rule 1: read the small group again
            else:
                skip, read_at_cursor = len(group) - 1, set(group)  # rule 2: overlap by one
        else:
            if not new_at_cursor:
                raise ListingNotAdvancingError(
                    f"a full page at lastUpdateTime {format_timestamp(cursor)} ($skip={skip}) brought no alert "
                    "not read before: the service does not honour $skip or the filter; stopping instead of looping"
                )
            read_at_cursor.update(item.id for item in items)
            skip += len(items) - 1

    alerts = collected.sorted_alerts()
    log.info(
        "listed %d alerts with lastUpdateTime in [%s, %s): %s",
        len(alerts),
        format_timestamp(start_ticks),
        format_timestamp(end_ticks),
        stats.as_dict(),
    )
    return AlertListing(start_ticks, end_ticks, alerts, stats, datetime.now(timezone.utc), client.tenant_id)


def _follow_next_links(client: AlertsApi, link: str, collected: _Collected, start: int, end: int) -> None:
    seen_links: set[str] = set()
    while link:
        if link in seen_links:
            raise ListingNotAdvancingError("the service returned the same @odata.nextLink twice")
        seen_links.add(link)
        page = client.get_next_link(link)
        collected.stats.requests += 1
        collected.stats.next_link_pages += 1
        items = _page_items(page, start, end)
        collected.stats.items_received += len(items)
        collected.add(items)
        link = page.get("@odata.nextLink")


def _page_items(page: Any, start: int, end: int) -> list[_Item]:
    """The page's alerts, each checked: an id, a lastUpdateTime inside the filter."""
    if not isinstance(page, dict) or not isinstance(page.get("value"), list):
        raise MdeMalformedResponseError("alert listing page has no 'value' list")
    items = []
    for alert in page["value"]:
        if not isinstance(alert, dict):
            raise MdeMalformedResponseError("alert listing page holds a non-object entry")
        alert_id = alert.get("id")
        if not isinstance(alert_id, str) or not alert_id:
            raise MdeMalformedResponseError("alert without an id in the listing")
        try:
            ticks = parse_timestamp(alert.get("lastUpdateTime"))
        except ValueError as exc:
            raise MdeMalformedResponseError(f"alert {for_log(alert_id)}: bad lastUpdateTime: {for_log(str(exc))}") from None
        if not start <= ticks < end:
            raise MdeMalformedResponseError(
                f"alert {for_log(alert_id)}: lastUpdateTime {for_log(alert['lastUpdateTime'])} is outside the requested "
                f"[{format_timestamp(start)}, {format_timestamp(end)})"
            )
        items.append(_Item(alert, alert_id, ticks))
    return items


def _check_order(items: list[_Item], cursor: int) -> None:
    # The cursor arithmetic relies on ascending order at or after the cursor.
    previous = cursor
    for item in items:
        if item.ticks < previous:
            raise MdeMalformedResponseError(
                f"alert listing is not ordered by lastUpdateTime ascending at or after the cursor "
                f"{format_timestamp(cursor)} (alert {for_log(item.id)})"
            )
        previous = item.ticks
