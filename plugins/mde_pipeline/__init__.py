"""Importable logic of the MDE alert-IPs pipeline.

Kept free of imports on purpose: Airflow processes import ``mde_pipeline.<module>``
directly, and importing the package must not pull in Airflow, azure-core or the
lake libraries. See docs/DESIGN.md for the map of modules.
"""

__version__ = "0.1.0"
