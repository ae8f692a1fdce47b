"""The Defender for Endpoint API: configuration, credentials, policies, client, listing. No Airflow, no lake."""
