"""The thin Airflow face: hook, operators, task callables, settings, assets, priority. The only layer that imports Airflow (with airflow/lake_location.py for where the lake is)."""
