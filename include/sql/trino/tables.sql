-- Trino: the MDE alert-IPs lake as Hive connector external tables (docs/ANALYSTS.md).
-- Reviewed DDL; the tests check it names every column of plugins/mde_pipeline/lake/schema.py
-- with a compatible type and parse every statement (sqlglot, trino dialect). Not run here
-- (no Trino server on the build machine).
--
-- Catalog `hive` (etc/catalog/hive.properties), for example:
--   connector.name=hive
--   hive.metastore=file                      # or thrift://..., glue
--   hive.metastore.catalog.dir=abfs://meta@account.dfs.core.windows.net/trino
--   hive.timestamp-precision=MICROSECONDS    # the lake keeps microseconds
--   fs.native-azure.enabled=true             # plus azure.auth-type and its settings
-- ${LAKE_ROOT}: abfs://container@account.dfs.core.windows.net/prefix (or file:///...).
--
-- Timestamps are Parquet INT64 micros adjusted to UTC: read them as UTC. The Hive
-- connector has no timestamp with time zone columns, hence timestamp(6). `tenant_id` and
-- `date` are the Hive partitions (directories tenant_id=<T>/date=YYYY-MM-DD), declared
-- last and in that order as the connector requires; `WHERE tenant_id = '...'` reads one
-- tenant's partitions only. The files also hold tenant_id (the same value): the
-- connector reads the partition's. Files starting with '_' or '.' (the compaction
-- manifest, writers' temp files) are skipped. New days and tenants appear after
-- sync_partition_metadata: run it after loads (e.g. hourly) or once a day after
-- compaction; compaction itself changes files inside a partition, not partitions.

CREATE SCHEMA IF NOT EXISTS hive.mde WITH (location = '${LAKE_ROOT}');

CREATE TABLE IF NOT EXISTS hive.mde.alert_ips (
    alert_id                varchar,
    ip                      varchar,
    ip_version              tinyint,
    alert_last_update_time  timestamp(6),
    alert_creation_time     timestamp(6),
    severity                varchar,
    incident_id             bigint,
    machine_id              varchar,
    interval_start          timestamp(6),
    fetched_at              timestamp(6),
    found_by_lookback_at    timestamp(6),
    ip_scope                varchar,
    tenant_id               varchar,
    "date"                  date
)
WITH (
    external_location = '${LAKE_ROOT}/alert_ips',
    format = 'PARQUET',
    partitioned_by = ARRAY['tenant_id', 'date']
);

CALL hive.system.sync_partition_metadata(schema_name => 'mde', table_name => 'alert_ips', mode => 'FULL');

CREATE TABLE IF NOT EXISTS hive.mde.alerts (
    alert_id                varchar,
    incident_id             bigint,
    investigation_id        bigint,
    title                   varchar,
    description             varchar,
    severity                varchar,
    status                  varchar,
    category                varchar,
    detection_source        varchar,
    threat_family_name      varchar,
    threat_name             varchar,
    classification          varchar,
    determination           varchar,
    machine_id              varchar,
    computer_dns_name       varchar,
    rbac_group_name         varchar,
    aad_tenant_id           varchar,
    mitre_techniques        array(varchar),
    alert_creation_time     timestamp(6),
    first_event_time        timestamp(6),
    last_event_time         timestamp(6),
    last_update_time        timestamp(6),
    resolved_time           timestamp(6),
    assigned_to             varchar,
    related_user_name       varchar,
    related_user_domain     varchar,
    comments                array(row(comment varchar, created_by varchar, created_time timestamp(6))),
    ips_status              varchar,
    ip_count                integer,
    invalid_ip_values       array(varchar),
    interval_start          timestamp(6),
    listed_at               timestamp(6),
    fetched_at              timestamp(6),
    ips_error               varchar,
    field_problems          array(varchar),
    raw                     varchar,
    found_by_lookback_at    timestamp(6),
    tenant_id               varchar,
    "date"                  date
)
WITH (
    external_location = '${LAKE_ROOT}/alerts',
    format = 'PARQUET',
    partitioned_by = ARRAY['tenant_id', 'date']
);

CALL hive.system.sync_partition_metadata(schema_name => 'mde', table_name => 'alerts', mode => 'FULL');
