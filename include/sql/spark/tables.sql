-- Spark SQL tables over the MDE alert-IPs lake (docs/ANALYSTS.md).
--
-- ${LAKE_ROOT}: the lake root as Spark opens it, e.g. file:///data/lake or
-- abfss://container@account.dfs.core.windows.net/prefix (hadoop-azure on the classpath).
-- Run with spark.sql.session.timeZone=UTC so timestamps print in UTC.
--
-- Column types pin the lake schema (plugins/mde_pipeline/lake/schema.py): every file has
-- exactly these columns. Timestamps are Parquet INT64 micros adjusted to UTC, which
-- Spark reads as TIMESTAMP. `tenant_id` and `date` are the Hive partitions (directories
-- <table>/tenant_id=<T>/date=YYYY-MM-DD; the files hold the same tenant_id, the
-- directory's value is what Spark returns), so `WHERE tenant_id = '...'` reads one
-- tenant's folders only. Spark lists partition columns last (after fetched_at / raw),
-- whatever their place below. Spark skips files starting with '_' or '.', so the
-- compaction manifest and writers' temp files are never read. After new days (or a new
-- tenant) land, MSCK REPAIR TABLE registers them.

CREATE TABLE IF NOT EXISTS alert_ips (
    tenant_id               STRING,
    alert_id                STRING,
    ip                      STRING,
    ip_version              TINYINT,
    alert_last_update_time  TIMESTAMP,
    alert_creation_time     TIMESTAMP,
    severity                STRING,
    incident_id             BIGINT,
    machine_id              STRING,
    interval_start          TIMESTAMP,
    fetched_at              TIMESTAMP,
    found_by_lookback_at    TIMESTAMP,
    ip_scope                STRING,
    date                    DATE
)
USING PARQUET
PARTITIONED BY (tenant_id, date)
LOCATION '${LAKE_ROOT}/alert_ips';

MSCK REPAIR TABLE alert_ips;

CREATE TABLE IF NOT EXISTS alerts (
    tenant_id               STRING,
    alert_id                STRING,
    incident_id             BIGINT,
    investigation_id        BIGINT,
    title                   STRING,
    description             STRING,
    severity                STRING,
    status                  STRING,
    category                STRING,
    detection_source        STRING,
    threat_family_name      STRING,
    threat_name             STRING,
    classification          STRING,
    determination           STRING,
    machine_id              STRING,
    computer_dns_name       STRING,
    rbac_group_name         STRING,
    aad_tenant_id           STRING,
    mitre_techniques        ARRAY<STRING>,
    alert_creation_time     TIMESTAMP,
    first_event_time        TIMESTAMP,
    last_event_time         TIMESTAMP,
    last_update_time        TIMESTAMP,
    resolved_time           TIMESTAMP,
    assigned_to             STRING,
    related_user_name       STRING,
    related_user_domain     STRING,
    comments                ARRAY<STRUCT<comment: STRING, created_by: STRING, created_time: TIMESTAMP>>,
    ips_status              STRING,
    ip_count                INT,
    invalid_ip_values       ARRAY<STRING>,
    interval_start          TIMESTAMP,
    listed_at               TIMESTAMP,
    fetched_at              TIMESTAMP,
    ips_error               STRING,
    field_problems          ARRAY<STRING>,
    raw                     STRING,
    found_by_lookback_at    TIMESTAMP,
    date                    DATE
)
USING PARQUET
PARTITIONED BY (tenant_id, date)
LOCATION '${LAKE_ROOT}/alerts';

MSCK REPAIR TABLE alerts;
