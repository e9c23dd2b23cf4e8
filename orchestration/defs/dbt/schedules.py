"""Schedules: the minute rollups every minute, the hour and day rollups every hour."""

import dagster as dg

from orchestration.defs.dbt.jobs import metrics_hourly_job, metrics_minute_job
from orchestration.defs.warehouse.loading import RAW_EVENTS_KEY

IN_PROGRESS = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]
# Local demo: schedules start RUNNING with `make dagster` (stop them in the UI; the choice is kept).
DEFAULT_STATUS = dg.DefaultScheduleStatus.RUNNING
HOURLY_ROLLUPS = (dg.AssetKey("fct_metrics_hour"), dg.AssetKey("fct_metrics_day"))
# The watermarks read the hour and day rollups: until they were built once, the minute job leaves them out.
MINUTE_WITHOUT_WATERMARKS = [RAW_EVENTS_KEY, dg.AssetKey("stg_tracking__events"), dg.AssetKey("fct_metrics_minute")]


def running(context: dg.ScheduleEvaluationContext, job_name: str) -> bool:
    """A run of the job is queued or running: a build slower than the interval must not pile up runs."""
    return bool(context.instance.get_run_records(dg.RunsFilter(job_name=job_name, statuses=IN_PROGRESS), limit=1))


@dg.schedule(
    job=metrics_minute_job,
    cron_schedule="* * * * *",
    execution_timezone="UTC",
    default_status=DEFAULT_STATUS,
    name="metrics_minute_every_minute",
)
def metrics_minute_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
    """Every minute: load, stage, minute rollups and watermarks (not while the previous run is going)."""
    if running(context, metrics_minute_job.name):
        return dg.SkipReason("the previous metrics_minute run is still queued or running")
    if any(context.instance.get_latest_materialization_event(key) is None for key in HOURLY_ROLLUPS):
        return dg.RunRequest(asset_selection=MINUTE_WITHOUT_WATERMARKS, tags={"analytics/bootstrap": "true"})
    return dg.RunRequest()


@dg.schedule(
    job=metrics_hourly_job,
    cron_schedule="5 * * * *",  # five minutes past: the minute job has loaded the hour's last events
    execution_timezone="UTC",
    default_status=DEFAULT_STATUS,
    name="metrics_hourly_every_hour",
)
def metrics_hourly_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
    """Every hour: stage, hour and day rollups, watermarks (not while the previous run is going)."""
    if running(context, metrics_hourly_job.name):
        return dg.SkipReason("the previous metrics_hourly run is still queued or running")
    return dg.RunRequest()
