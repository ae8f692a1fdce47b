"""Airflow DAG mde_lake_compaction: the lake's closed days, daily (the flow: mde_pipeline.airflow.dags.lake_compaction)."""

from mde_pipeline.airflow.dags.lake_compaction import compaction_dag

dag = compaction_dag()
