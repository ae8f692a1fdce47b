"""The Parquet lake: no API and no Airflow. Modules, downhill:

* :mod:`.schema` - table names, Arrow schemas, dictionary columns, row keys.
* :mod:`.location` - ``resolve_lake_location(root, conn_id, blob_filesystem=...) -> LakeLocation``.
* :mod:`.layout` - every path and name rule (interval files, day and month directories,
  staging, locks, IP index) and the listings that read them back.
* :mod:`.records` - alert JSON and fetch results -> rows; ``interval_tables``, ``check_interval``.
* :mod:`.parquet` - the one Parquet writer and the one reader.
* :mod:`.storage`, :mod:`.locks` - atomic writes, directory swaps, day locks.
* :mod:`.retired` - swapped-out local day directories, kept for readers, then swept.
* :mod:`.ip_index` - the IP-sorted month copy of compacted ``alert_ips`` days.
* :mod:`.days` - a day as one unit: read, build compacted, swap in, recover.
* :mod:`.commit` - ``commit_interval``: the only hourly write.
* :mod:`.compaction` - closed days -> compacted days (``compaction_step``).
* :mod:`.staging` - a run's JSON documents under ``<root>/_staging/<interval>/<run id>/``.

Nothing is imported here: callers import the module they need, and importing the
package stays free of pyarrow.
"""
