"""The lake's one Parquet writer and one Parquet reader.

Every lake file is zstd (level 3), with statistics, microsecond timestamps and the
dictionary columns of its table (schema.DICTIONARY_COLUMNS). Hourly files are written as
they come, in row groups of ``ROW_GROUP_ROWS``. Files sorted for queries (compacted
days, the IP index) are in the table's ``SORT_KEYS`` order (completed by its row keys
into a total order, so the same rows always give the same bytes), declare that order,
and carry a page index and Bloom filters on the point-lookup columns.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from mde_pipeline.lake.location import LakeLocation
from mde_pipeline.lake.schema import ALERT_IPS, ALERTS, DICTIONARY_COLUMNS, ROW_KEYS, conform

# Hourly files hold one row group; compacted files many. Rows, not bytes (pyarrow's unit).
ROW_GROUP_ROWS = 128 * 1024
COMPRESSION = "zstd"
COMPRESSION_LEVEL = 3

# Columns each table is sorted by; ROW_KEYS complete them into a total order.
SORT_KEYS: dict[str, tuple[str, ...]] = {
    ALERT_IPS: ("ip", "alert_last_update_time"),
    ALERTS: ("alert_id", "last_update_time"),
}
# Bloom filters on the point-lookup columns: a day whose file lacks the IP is skipped
# after reading a few KB, even though its min/max range covers the whole IP space.
BLOOM_COLUMNS: dict[str, tuple[str, ...]] = {ALERT_IPS: ("ip",), ALERTS: ("alert_id",)}
BLOOM_FPP = 0.01


def sort_for_queries(table: str, data: pa.Table) -> pa.Table:
    """``data`` in the query order of ``table`` (total, so deterministic)."""
    keys = list(SORT_KEYS[table]) + [k for k in ROW_KEYS[table] if k not in SORT_KEYS[table]]
    return data.sort_by([(key, "ascending") for key in keys])


def parquet_bytes(table: str, data: pa.Table, *, row_group_rows: int = ROW_GROUP_ROWS, sorted_for_queries: bool = False) -> bytes:
    """The whole Parquet file of lake table ``table`` for ``data``, in memory.

    ``data`` is checked against the table's schema. ``sorted_for_queries``: ``data`` is
    already in :func:`sort_for_queries` order; the file says so and gets a page index
    and Bloom filters.
    """
    data = conform(table, data)
    options: dict = {}
    if sorted_for_queries:
        options = {
            "sorting_columns": [pq.SortingColumn(data.schema.get_field_index(k)) for k in SORT_KEYS[table]],
            "write_page_index": True,
            "bloom_filter_options": {
                column: {"ndv": max(1024, data.num_rows), "fpp": BLOOM_FPP} for column in BLOOM_COLUMNS[table]
            },
        }
    sink = pa.BufferOutputStream()
    pq.write_table(
        data,
        sink,
        row_group_size=row_group_rows,
        compression=COMPRESSION,
        compression_level=COMPRESSION_LEVEL,
        use_dictionary=list(DICTIONARY_COLUMNS[table]),
        write_statistics=True,
        coerce_timestamps="us",
        allow_truncated_timestamps=False,
        **options,
    )
    return sink.getvalue().to_pybytes()


def read_parquet(location: LakeLocation, path: str) -> pa.Table:
    """One lake file (``path`` in the filesystem's terms, see ``location.path``) as a table.

    ``FileNotFoundError`` (naming the uri) when it does not exist. A local file is read
    through one open handle: given a path, pyarrow opens it twice (footer, then pages),
    which could pair two versions if a commit lands in between.
    """
    if location.is_local:
        with open(path, "rb") as handle:
            return pq.read_table(handle)
    location.fs.invalidate_cache()
    try:
        data = location.fs.cat_file(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"{location.protocol}://{path}") from None
    return pq.read_table(pa.BufferReader(data))
