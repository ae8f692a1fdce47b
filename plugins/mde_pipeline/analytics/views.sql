-- DuckDB views over the MDE alert-IPs lake (docs/ANALYSTS.md).
--
-- ${LAKE_ROOT} stands for the lake root as DuckDB opens it: a local path, or
-- abfs://container/prefix once the lake's fsspec filesystem is registered
-- (duckdb.register_filesystem). The analyst CLI (python -m mde_pipeline.analytics.cli)
-- substitutes it and runs this file; to use it by hand, replace it, e.g. with sed.
--
-- Layout: <table>/tenant_id=<tenant id>/date=YYYY-MM-DD/{interval=YYYYMMDDTHH,compacted-*}.parquet.
-- The glob matches hourly and compacted files alike and never the writers' temp files
-- (.name.tmp) or the _staging/_locks/_ip_index folders. `tenant_id` and `date` come from
-- the directory names (the files hold the same tenant_id; the directory's wins): filter
-- on them to skip whole tenants and days (DuckDB then never opens their files).
-- hive_types pins both, so a tenant id that looks like a number stays text.

-- union_by_name: files from before a column was added (found_by_lookback_at, ...) read it as null.
CREATE OR REPLACE VIEW alert_ips AS
SELECT *
FROM read_parquet('${LAKE_ROOT}/alert_ips/tenant_id=*/date=*/*.parquet', hive_partitioning = true,
                  hive_types = {'tenant_id': VARCHAR, 'date': DATE}, union_by_name = true);

CREATE OR REPLACE VIEW alerts AS
SELECT *
FROM read_parquet('${LAKE_ROOT}/alerts/tenant_id=*/date=*/*.parquet', hive_partitioning = true,
                  hive_types = {'tenant_id': VARCHAR, 'date': DATE},
                  union_by_name = true);  -- files from before ips_error/field_problems/raw read them as null

-- The latest version of every alert (one row per tenant and alert).
CREATE OR REPLACE VIEW alerts_latest AS
SELECT *
FROM alerts
QUALIFY row_number() OVER (PARTITION BY tenant_id, alert_id ORDER BY last_update_time DESC) = 1;

-- The IPs of each alert's latest version: the rows of the latest alert_last_update_time
-- per alert. An alert whose latest version has no IPs has no rows here (see
-- alerts_latest.ips_status / ip_count for why).
CREATE OR REPLACE VIEW alert_ips_latest AS
SELECT i.*
FROM alert_ips AS i
JOIN (
    SELECT tenant_id, alert_id, max(last_update_time) AS last_update_time
    FROM alerts
    GROUP BY tenant_id, alert_id
) AS latest
  ON i.tenant_id = latest.tenant_id
 AND i.alert_id = latest.alert_id
 AND i.alert_last_update_time = latest.last_update_time;

-- Every alert version's IPs with the attributes of that version of the alert.
CREATE OR REPLACE VIEW alert_ip_details AS
SELECT
    i.tenant_id, i.alert_id, i.ip, i.ip_version, i.ip_scope, i.alert_last_update_time,
    a.alert_creation_time, a.severity, a.status, a.category, a.title,
    a.detection_source, a.threat_family_name, a.threat_name, a.classification, a.determination,
    a.incident_id, a.machine_id, a.computer_dns_name, a.rbac_group_name, a.mitre_techniques,
    a.related_user_name, a.related_user_domain, a.assigned_to,
    i.interval_start, i.date
FROM alert_ips AS i
JOIN alerts AS a
  ON a.tenant_id = i.tenant_id
 AND a.alert_id = i.alert_id
 AND a.last_update_time = i.alert_last_update_time;

-- Per IP: when it was first and last seen in an alert, and in how many alerts.
-- first_seen is the earliest creation time of an alert naming the IP (its update time
-- when the creation time is unknown); last_seen the latest update of such an alert.
CREATE OR REPLACE VIEW ip_summary AS
SELECT
    tenant_id,
    ip,
    any_value(ip_version) AS ip_version,
    max(ip_scope) AS ip_scope,  -- one value per IP (max skips the nulls of old rows)
    min(coalesce(alert_creation_time, alert_last_update_time)) AS first_seen,
    max(alert_last_update_time) AS last_seen,
    count(DISTINCT alert_id) AS alert_count,
    count(DISTINCT machine_id) AS machine_count,
    count(DISTINCT alert_id) FILTER (WHERE severity = 'High') AS high_severity_alert_count
FROM alert_ips
GROUP BY tenant_id, ip;
