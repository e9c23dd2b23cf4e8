"""One folder per domain: warehouse (Kafka → raw_events), dbt (models, checks, schedules), replay."""
