-- Azure Synapse serverless SQL pool: views over the MDE alert-IPs lake (docs/ANALYSTS.md).
-- Reviewed DDL; the tests check it names every column of plugins/mde_pipeline/lake/schema.py
-- with a compatible type and parse every statement, the setup below included (sqlglot,
-- tsql dialect). Not run here (no Synapse workspace from the build machine).
--
-- Once per database (replace the placeholders; CREDENTIAL is optional when the caller's
-- Entra identity can read the container):
--
--   CREATE DATABASE mde_lake COLLATE Latin1_General_100_BIN2_UTF8;  -- Parquet strings are UTF-8
--   USE mde_lake;
--   CREATE EXTERNAL DATA SOURCE mde_lake
--       WITH (LOCATION = 'https://<account>.dfs.core.windows.net/<container>/<prefix>');
--
-- How the lake maps:
-- * BULK '<table>/tenant_id=*/date=*/*.parquet' reads hourly and compacted files alike and
--   never the compaction manifest (_compaction.json) or writers' temp files (.*.tmp);
-- * filepath(1) and filepath(2) are the wildcards, the Hive partitions tenant_id and date:
--   filter on tenant_id or [date] and the pool reads only those folders (partition
--   elimination through the view). The files hold the same tenant_id; the view takes the
--   folder's, bare filepath(1) as in Microsoft's partitioned-view example (the WITH clause
--   leaves the file column out), which is what lets a tenant_id filter skip folders;
-- * the WITH clause pins every column's type so no query depends on type inference:
--   timestamps are Parquet INT64 micros adjusted to UTC -> datetime2(6) (values are UTC);
--   int8 -> smallint (Parquet signed INT(8); T-SQL tinyint is unsigned);
--   lists and structs -> varchar(max) holding JSON (use OPENJSON to unnest).
-- Statements are separated by GO (SSMS / sqlcmd / Synapse Studio batches).

CREATE OR ALTER VIEW dbo.alert_ips AS
SELECT r.filepath(1) AS tenant_id, r.*, CAST(r.filepath(2) AS date) AS [date]
FROM OPENROWSET(
    BULK 'alert_ips/tenant_id=*/date=*/*.parquet',
    DATA_SOURCE = 'mde_lake',
    FORMAT = 'PARQUET'
)
WITH (
    alert_id                varchar(128) COLLATE Latin1_General_100_BIN2_UTF8,
    ip                      varchar(45) COLLATE Latin1_General_100_BIN2_UTF8,
    ip_version              smallint,
    alert_last_update_time  datetime2(6),
    alert_creation_time     datetime2(6),
    severity                varchar(32) COLLATE Latin1_General_100_BIN2_UTF8,
    incident_id             bigint,
    machine_id              varchar(128) COLLATE Latin1_General_100_BIN2_UTF8,
    interval_start          datetime2(6),
    fetched_at              datetime2(6),
    found_by_lookback_at    datetime2(6),
    ip_scope                varchar(16) COLLATE Latin1_General_100_BIN2_UTF8
) AS r;
GO

CREATE OR ALTER VIEW dbo.alerts AS
SELECT r.filepath(1) AS tenant_id, r.*, CAST(r.filepath(2) AS date) AS [date]
FROM OPENROWSET(
    BULK 'alerts/tenant_id=*/date=*/*.parquet',
    DATA_SOURCE = 'mde_lake',
    FORMAT = 'PARQUET'
)
WITH (
    alert_id                varchar(128) COLLATE Latin1_General_100_BIN2_UTF8,
    incident_id             bigint,
    investigation_id        bigint,
    title                   varchar(1024) COLLATE Latin1_General_100_BIN2_UTF8,
    description             varchar(max) COLLATE Latin1_General_100_BIN2_UTF8,
    severity                varchar(32) COLLATE Latin1_General_100_BIN2_UTF8,
    status                  varchar(32) COLLATE Latin1_General_100_BIN2_UTF8,
    category                varchar(128) COLLATE Latin1_General_100_BIN2_UTF8,
    detection_source        varchar(128) COLLATE Latin1_General_100_BIN2_UTF8,
    threat_family_name      varchar(256) COLLATE Latin1_General_100_BIN2_UTF8,
    threat_name             varchar(256) COLLATE Latin1_General_100_BIN2_UTF8,
    classification          varchar(64) COLLATE Latin1_General_100_BIN2_UTF8,
    determination           varchar(64) COLLATE Latin1_General_100_BIN2_UTF8,
    machine_id              varchar(128) COLLATE Latin1_General_100_BIN2_UTF8,
    computer_dns_name       varchar(512) COLLATE Latin1_General_100_BIN2_UTF8,
    rbac_group_name         varchar(256) COLLATE Latin1_General_100_BIN2_UTF8,
    aad_tenant_id           varchar(64) COLLATE Latin1_General_100_BIN2_UTF8,
    mitre_techniques        varchar(max) COLLATE Latin1_General_100_BIN2_UTF8,
    alert_creation_time     datetime2(6),
    first_event_time        datetime2(6),
    last_event_time         datetime2(6),
    last_update_time        datetime2(6),
    resolved_time           datetime2(6),
    assigned_to             varchar(256) COLLATE Latin1_General_100_BIN2_UTF8,
    related_user_name       varchar(256) COLLATE Latin1_General_100_BIN2_UTF8,
    related_user_domain     varchar(256) COLLATE Latin1_General_100_BIN2_UTF8,
    comments                varchar(max) COLLATE Latin1_General_100_BIN2_UTF8,
    ips_status              varchar(16) COLLATE Latin1_General_100_BIN2_UTF8,
    ip_count                int,
    invalid_ip_values       varchar(max) COLLATE Latin1_General_100_BIN2_UTF8,
    interval_start          datetime2(6),
    listed_at               datetime2(6),
    fetched_at              datetime2(6),
    ips_error               varchar(1024) COLLATE Latin1_General_100_BIN2_UTF8,
    field_problems          varchar(max) COLLATE Latin1_General_100_BIN2_UTF8,
    raw                     varchar(max) COLLATE Latin1_General_100_BIN2_UTF8,
    found_by_lookback_at    datetime2(6)
) AS r;
GO

CREATE OR ALTER VIEW dbo.alerts_latest AS
SELECT a.*
FROM dbo.alerts AS a
JOIN (
    SELECT tenant_id, alert_id, max(last_update_time) AS last_update_time
    FROM dbo.alerts
    GROUP BY tenant_id, alert_id
) AS latest
  ON a.tenant_id = latest.tenant_id
 AND a.alert_id = latest.alert_id
 AND a.last_update_time = latest.last_update_time;
GO

CREATE OR ALTER VIEW dbo.alert_ips_latest AS
SELECT i.*
FROM dbo.alert_ips AS i
JOIN (
    SELECT tenant_id, alert_id, max(last_update_time) AS last_update_time
    FROM dbo.alerts
    GROUP BY tenant_id, alert_id
) AS latest
  ON i.tenant_id = latest.tenant_id
 AND i.alert_id = latest.alert_id
 AND i.alert_last_update_time = latest.last_update_time;
GO

CREATE OR ALTER VIEW dbo.alert_ip_details AS
SELECT
    i.tenant_id, i.alert_id, i.ip, i.ip_version, i.ip_scope, i.alert_last_update_time,
    a.alert_creation_time, a.severity, a.status, a.category, a.title,
    a.detection_source, a.threat_family_name, a.threat_name, a.classification, a.determination,
    a.incident_id, a.machine_id, a.computer_dns_name, a.rbac_group_name, a.mitre_techniques,
    a.related_user_name, a.related_user_domain, a.assigned_to,
    i.interval_start, i.[date]
FROM dbo.alert_ips AS i
JOIN dbo.alerts AS a
  ON a.tenant_id = i.tenant_id
 AND a.alert_id = i.alert_id
 AND a.last_update_time = i.alert_last_update_time;
GO

CREATE OR ALTER VIEW dbo.ip_summary AS
SELECT
    tenant_id,
    ip,
    max(ip_version) AS ip_version,
    max(ip_scope) AS ip_scope,  -- one value per IP (max skips the nulls of old rows)
    min(coalesce(alert_creation_time, alert_last_update_time)) AS first_seen,
    max(alert_last_update_time) AS last_seen,
    count(DISTINCT alert_id) AS alert_count,
    count(DISTINCT machine_id) AS machine_count,
    count(DISTINCT CASE WHEN severity = 'High' THEN alert_id END) AS high_severity_alert_count
FROM dbo.alert_ips
GROUP BY tenant_id, ip;
GO
