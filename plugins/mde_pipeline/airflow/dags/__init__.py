"""The pipeline's DAGs, defined in the package so that a deployment's DAG folder needs only
two small files (dags/ of the repository): each puts one function's DAGs into its module."""
