-- Spark SQL views, the same as include/sql/duckdb/views.sql (run after tables.sql).

-- (tenant_id, alert_id, last_update_time) is unique in the lake: one row per alert.
CREATE OR REPLACE TEMPORARY VIEW alerts_latest AS
SELECT a.*
FROM alerts AS a
JOIN (
    SELECT tenant_id, alert_id, max(last_update_time) AS last_update_time
    FROM alerts
    GROUP BY tenant_id, alert_id
) AS latest
  ON a.tenant_id = latest.tenant_id
 AND a.alert_id = latest.alert_id
 AND a.last_update_time = latest.last_update_time;

CREATE OR REPLACE TEMPORARY VIEW alert_ips_latest AS
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

CREATE OR REPLACE TEMPORARY VIEW alert_ip_details AS
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

CREATE OR REPLACE TEMPORARY VIEW ip_summary AS
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
