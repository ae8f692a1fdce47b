"""The Parquet lake: where it is, what its tables look like, how files land in it.

* :mod:`.location` - ``resolve_lake_location(root=None, conn_id=None) -> LakeLocation``
  (Variable ``mde_lake_root``: local path, ``file://`` or ``abfs://``).
* :mod:`.schema` - ``ALERTS_SCHEMA``, ``ALERT_IPS_SCHEMA``, ``interval_tables(...)``
  (listing + IP results -> both tables), ``to_table``, ``empty_table``.
* :mod:`.writer` - ``commit_interval(location, interval_start, tables)``, interval file
  names, ``write_table_atomic``, ``read_interval``.
* :mod:`.staging` - ``write_staging`` / ``read_staging`` / ``list_staging`` /
  ``clear_staging`` under ``<root>/_staging/<interval>/<run id>/``.

Nothing is imported here: DAG files import the module they need, and importing the
package stays free of pyarrow and Airflow.
"""
