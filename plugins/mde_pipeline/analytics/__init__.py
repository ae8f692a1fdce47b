"""The analysts' side: DuckDB sessions on the lake (session) and the query CLI (cli)."""
