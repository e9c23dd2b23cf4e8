"""dbt domain: the models as assets, their tests as asset checks, rollup schedules and the rebuild job."""

import dagster as dg

from orchestration.defs.dbt.assets import dbt_models
from orchestration.defs.dbt.jobs import metrics_hourly_job, metrics_minute_job, rebuild_metrics_job
from orchestration.defs.dbt.project import dbt_resource
from orchestration.defs.dbt.schedules import metrics_hourly_schedule, metrics_minute_schedule

defs = dg.Definitions(
    assets=[dbt_models],
    jobs=[metrics_minute_job, metrics_hourly_job, rebuild_metrics_job],
    schedules=[metrics_minute_schedule, metrics_hourly_schedule],
    resources={"dbt": dbt_resource},
)
