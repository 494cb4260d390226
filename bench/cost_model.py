"""The monthly AWS bill for N inboxes at 50 emails per inbox per day, from this run's measurements.

Reads bench/results.json (written by the bench_* scripts of the same ``make bench`` run; run last)
and template.yaml, and prints the monthly cost for 10, 100, 1,000 and 10,000 inboxes, the idle
deployment (0 inboxes) and the polling cost per inbox-month, and whether the targets hold (idle
<= $5 a month, polling <= $0.02 per inbox-month). The table goes to results.json as "cost_model".

Volumes: 50 emails per inbox per day, 30.4 days a month (1,520 emails per inbox-month); each
scheduled function at its rate in template.yaml (dispatch every minute: 43,776 runs a month);
8,640 polls per inbox-month (every 5 minutes, as the issue counts them). Queue-triggered functions
are invoked per email as the workload measured (conservative at large N, where batches fill up).
Lambda time: each workload invocation's estimated time (below), per inbox-month, plus 0.1 s per
scheduled run that finds nothing to do.

Prices (us-east-1, on demand, USD, as published at the time of writing):

- DynamoDB on demand: $0.625 per million write request units, $0.125 per million read request
  units; storage $0.25 per GB-month; point-in-time recovery (on for every table in the template)
  $0.20 per GB-month.
- Lambda arm64: $0.0000133334 per GB-second, $0.20 per million requests (no free tier counted).
- SQS: FIFO $0.50 per million requests, standard $0.40 per million.
- KMS: $1 per key-month, $0.03 per 10,000 requests ($3 per million).
- CloudWatch: $0.10 per standard alarm-month (metric-math alarms over standard-resolution metrics
  are standard alarms), $0.30 per custom metric-month (first 10,000), dashboards $3 per month each
  (the first 3 of an account are free: this model assumes the account's 3 free ones are used by
  something else, so this one is billed), Logs ingestion $0.50 per GB.
- X-Ray: $5 per million traces recorded, the first 100,000 a month free. Lambda's default sampling
  records the first request each second and 5% of the rest.
- The always-free tier (every account, every month; a second total assumes an account of
  sendwell's own): Lambda 1 million requests and 400,000 GB-seconds, SQS 1 million requests, KMS
  20,000 requests, CloudWatch 10 alarms, 10 custom metrics, 3 dashboards and 5 GB of logs,
  DynamoDB 25 GB of storage (on-demand requests have none).
- SES ($0.10 per 1,000) is not counted: inboxes send through their own provider; SES carries only
  notices, a handful a month. EventBridge Scheduler's 14 million free invocations a month cover
  the schedules.

Assumptions, where no bench measures it (each printed with the table):

- latency per call inside Lambda: 8 ms DynamoDB, 15 ms SQS, 10 ms KMS; the mail provider: 550 ms per
  Outlook send (sendMail, then the Sent copy's lookup), 200 ms per Graph delta poll (a poll worker
  has POLL_THREADS polls at their providers at once, so each is billed that share of it);
- Lambda's SQS event source mapping long-polls each queue with 5 connections, one ReceiveMessage
  per 20 s each (657,000 requests a month per mapping), whatever the queue holds;
- CloudWatch Logs: each invocation also writes Lambda's START, END and REPORT lines (300 bytes);
- storage: 12 months of enrollments and activity are kept; each DynamoDB item costs 100 bytes of
  overhead, and each index entry its key attributes and 100 bytes.

    python bench/cost_model.py
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "layers" / "sendwell"), str(ROOT)]

from bench.results import figure, load, record, value  # noqa: E402
from local.cfn import load_template, resources_of_type  # noqa: E402
from sendwell.observability import Metric  # noqa: E402
from sendwell.services.polling import POLL_THREADS  # noqa: E402

# Prices, USD.
WRU = 0.625e-6
RRU = 0.125e-6
STORAGE_GB_MONTH = 0.25
PITR_GB_MONTH = 0.20
LAMBDA_GB_SECOND = 0.0000133334  # arm64
LAMBDA_REQUEST = 0.20e-6
SQS_FIFO = 0.50e-6
SQS_STANDARD = 0.40e-6
KMS_KEY_MONTH = 1.0
KMS_REQUEST = 0.03 / 10_000  # $3 per million
ALARM_MONTH = 0.10
METRIC_MONTH = 0.30
DASHBOARD_MONTH = 3.0
LOGS_GB = 0.50
XRAY_TRACE = 5e-6
XRAY_FREE_TRACES = 100_000
# AWS's always-free tier, per account and month (not the 12-month trial): the second set of totals
# is for an account sendwell has to itself. On-demand DynamoDB requests have no free tier.
FREE = {
    "lambda_requests": 1_000_000,
    "lambda_gb_seconds": 400_000,
    "sqs_requests": 1_000_000,  # priced here at the standard rate
    "kms_requests": 20_000,
    "alarms": 10,
    "metrics": 10,
    "dashboards": 3,
    "log_gb": 5,
    "dynamodb_storage_gb": 25,
}

# Volumes.
DAYS = 30.4
EMAILS_PER_INBOX_DAY = 50
MINUTES = DAYS * 24 * 60
DISPATCH_RUNS = MINUTES
POLLS_PER_INBOX_MONTH = 8_640  # the figure (30 days at 5 minutes)
SECONDS = MINUTES * 60

# Assumptions.
DYNAMODB_S, SQS_S, KMS_S = 0.008, 0.015, 0.010
PROVIDER_SEND_S, PROVIDER_POLL_S = 0.55, 0.20
# A poll worker has POLL_THREADS polls at their providers at once: each poll is billed a share.
POLL_BILLED_S = PROVIDER_POLL_S / POLL_THREADS
ESM_REQUESTS_MONTH = 5 * 3 * MINUTES  # 5 long-polling connections, a receive per 20 s each
PLATFORM_LOG_BYTES = 300
SCHEDULED_RUN_S = 0.1  # a scheduled run with nothing to do
STEPS = 3  # emails per prospect in the workload's campaigns
RETENTION_MONTHS = 12
ITEM_OVERHEAD = 100
FALLBACK_POLL_WRU = FALLBACK_POLL_RRU = 1.0  # per idle poll, when no bench measured it

SIZES = (0, 10, 100, 1_000, 10_000)


@dataclass(frozen=True)
class Function:
    memory_gb: float
    architecture: str


def functions(template: Mapping[str, Any]) -> dict[str, Function]:
    defaults = template["Globals"]["Function"]
    out: dict[str, Function] = {}
    for name, resource in resources_of_type(template, "AWS::Serverless::Function").items():
        props = resource["Properties"]
        memory = int(props.get("MemorySize", defaults["MemorySize"]))
        out[name] = Function(memory / 1024, str(props.get("Architectures", defaults["Architectures"])[0]))
    return out


def sqs_mappings(template: Mapping[str, Any]) -> list[bool]:
    """One entry per SQS event source mapping: whether its queue is FIFO."""
    queues = resources_of_type(template, "AWS::SQS::Queue")
    fifo: list[bool] = []
    for resource in resources_of_type(template, "AWS::Serverless::Function").values():
        for event in resource["Properties"].get("Events", {}).values():
            if event["Type"] == "SQS":
                queue = event["Properties"]["Queue"]["Fn::GetAtt"][0]
                fifo.append(bool(queues[queue]["Properties"].get("FifoQueue")))
    return fifo


def scheduled_runs(template: Mapping[str, Any]) -> dict[str, float]:
    """Runs a month of each scheduled function, from its rate in template.yaml."""
    runs: dict[str, float] = {}
    for name, resource in resources_of_type(template, "AWS::Serverless::Function").items():
        for event in resource["Properties"].get("Events", {}).values():
            if event["Type"] in ("Schedule", "ScheduleV2"):
                amount, unit = event["Properties"]["ScheduleExpression"].removeprefix("rate(").rstrip(")").split()
                runs[name] = MINUTES / (int(amount) * (60 if unit.startswith("hour") else 1))
    return runs


def scheduled_metrics() -> int:
    """Metric names the scheduled handlers emit on every run, whatever happens (billed all month
    even when idle): those named in the dispatch, poll and reminders handlers."""
    names: set[str] = set()
    for path in (
        "functions/dispatch/dispatch_app.py",
        "functions/poll/poll_app.py",
        "functions/reminders/reminders_app.py",
    ):
        text = (ROOT / path).read_text()
        names |= {m.value for m in Metric if f"Metric.{m.name}" in text}
    if "INBOUND_METRICS" in (ROOT / "functions/poll/poll_app.py").read_text():
        from sendwell.observability import INBOUND_METRICS

        names |= {m.value for m in INBOUND_METRICS.values()}
    return len(names)


def get(results: Mapping[str, Any], *path: str, default: float) -> float:
    found = value(results, *path)
    return float(found) if isinstance(found, int | float) else default


def duration_s(results: Mapping[str, Any], function: str, *, provider_s: float = 0.0) -> float:
    """A workload invocation's billed time estimate: our code's time on moto (wall time minus the
    time inside AWS calls) plus each call at its assumed latency, plus the provider's calls."""
    own = get(results, "workload", "functions", function, "wall_ms_per_invocation", default=0) - get(
        results, "workload", "functions", function, "aws_call_ms_per_invocation", default=0
    )
    calls = (
        get(results, "workload", "functions", function, "dynamodb_calls_per_invocation", default=0) * DYNAMODB_S
        + get(results, "workload", "functions", function, "sqs_calls_per_invocation", default=0) * SQS_S
        + get(results, "workload", "functions", function, "other_calls_per_invocation", default=0) * KMS_S
    )
    return max(own, 0) / 1000 + calls + provider_s


def main() -> None:
    results = load()
    if "workload" not in results:
        print("cost model: bench/results.json has no 'workload' figures; run bench/bench_workload.py first")
        sys.exit(1)
    template = load_template()
    fns = functions(template)
    alarms = len(resources_of_type(template, "AWS::CloudWatch::Alarm"))
    keys = len(resources_of_type(template, "AWS::KMS::Key"))
    dashboards = len(resources_of_type(template, "AWS::CloudWatch::Dashboard"))
    metrics_all = len(Metric)  # one dimension set each: service=sendwell (Powertools adds it)
    metrics_idle = scheduled_metrics()
    mappings = sqs_mappings(template)
    w = "workload"
    inboxes_measured = get(results, w, "workload", "inboxes", default=20)
    # What each email costs, whatever N: sending, dispatch decisions, the import (per prospect), the
    # mapping's deletes. The scheduler's and poll runs' own reads are fixed costs, priced per run.
    email_wru = sum(
        get(results, w, "by_phase", p, "write_units_per_email", default=0) for p in ("send", "dispatch", "import")
    )
    email_rru = sum(
        get(results, w, "by_phase", p, "read_units_per_email", default=0) for p in ("send", "dispatch", "import")
    )
    emails = get(results, w, "emails_sent", default=1)
    scheduler_runs_measured = get(results, w, "functions", "DispatchFunction", "invocations", default=0)
    scheduler_rru = get(results, w, "functions", "DispatchFunction", "read_units_per_invocation", default=0)
    email_rru -= scheduler_rru * scheduler_runs_measured / emails  # priced per run below
    email_kms = sum(get(results, w, "by_phase", p, "kms_requests_per_email", default=0) for p in ("send", "dispatch"))
    sqs_std = get(results, w, "sqs_requests_per_email_by_queue_type", "standard", default=0)
    sqs_fifo = get(results, w, "sqs_requests_per_email_by_queue_type", "fifo", default=0)
    # Polling's DynamoDB units per inbox poll: bench_poll_scale's when it ran (its largest N), else
    # this run's workload polls (replies and token refreshes included), else the stated assumption.
    # Polling's SQS requests and Lambda time are the workload's, with everything else.
    scale = poll_scale_entry(results)
    if scale is not None:
        poll_source = f"bench_poll_scale at N={scale[1:]} + the workload's token refreshes"
        poll_wru = get(results, "poll_scale", scale, "write_units_per_poll", default=FALLBACK_POLL_WRU)
        poll_rru = get(results, "poll_scale", scale, "read_units_per_poll", default=FALLBACK_POLL_RRU)
        refresh_wru = (
            get(results, w, "token_refresh", "per_inbox_day", default=0)
            * DAYS
            * get(results, w, "token_refresh", "write_units_each", default=0)
        )
    elif value(results, w, "poll_write_units_per_inbox_poll") is not None:
        poll_source = "the workload's polls (token refreshes and replies included)"
        poll_wru = get(results, w, "poll_write_units_per_inbox_poll", default=FALLBACK_POLL_WRU)
        poll_rru = get(results, w, "poll_read_units_per_inbox_poll", default=FALLBACK_POLL_RRU)
        refresh_wru = 0.0
    else:
        poll_source = "assumed: 1 write unit + 1 read unit per idle poll"
        poll_wru, poll_rru, refresh_wru = FALLBACK_POLL_WRU, FALLBACK_POLL_RRU, 0.0
    poll_kms = get(results, w, "poll_kms_requests_per_inbox_poll", default=0)
    polling_per_inbox = (
        POLLS_PER_INBOX_MONTH * (poll_wru * WRU + poll_rru * RRU + poll_kms * KMS_REQUEST) + refresh_wru * WRU
    )
    # Lambda. Scheduled functions run at their template rate whatever N; the queue-triggered ones
    # are invoked per email as measured. Their time (estimated per invocation from the workload)
    # splits into a fixed part per scheduled run (SCHEDULED_RUN_S) and the rest, per inbox-month.
    schedules = scheduled_runs(template)
    measured = [f for f in fns if get(results, w, "functions", f, "invocations", default=0)]
    days_measured = get(results, w, "workload", "simulated_days", default=1)
    work_s = sum(get(results, w, "functions", f, "invocations", default=0) * duration_s(results, f) for f in measured)
    fixed_s = sum(
        get(results, w, "functions", f, "invocations", default=0) * SCHEDULED_RUN_S for f in measured if f in schedules
    )
    polls_per_inbox_day = get(results, w, "inbox_polls", default=0) / max(inboxes_measured * days_measured, 1)
    lambda_s_per_inbox_month = (
        max(work_s - fixed_s, 0) / max(inboxes_measured * days_measured, 1)
        + EMAILS_PER_INBOX_DAY * PROVIDER_SEND_S
        + polls_per_inbox_day * POLL_BILLED_S
    ) * DAYS
    queue_invocations_per_email = sum(
        get(results, w, "functions", f, "invocations_per_email", default=0) for f in measured if f not in schedules
    )
    memory_gb = max(fn.memory_gb for fn in fns.values())  # every function has the Globals' 512 MB today
    logs_per_run = {f: get(results, w, "functions", f, "log_bytes_per_invocation", default=1000) for f in schedules}
    queue_log_bytes = sum(
        get(results, w, "functions", f, "invocations_per_email", default=0)
        * (get(results, w, "functions", f, "log_bytes_per_invocation", default=1000) + PLATFORM_LOG_BYTES)
        for f in measured
        if f not in schedules
    )
    import_share = get(results, w, "by_phase", "import", "write_units_per_email", default=0)
    # The import costs per prospect, not per email: a prospect gets STEPS emails over the sequence.
    prospects = get(results, w, "workload", "imported", default=emails)
    email_wru += import_share * emails / max(prospects, 1) / STEPS - import_share

    rows: list[dict[str, float]] = []
    for n in SIZES:
        monthly_emails = n * EMAILS_PER_INBOX_DAY * DAYS
        # DynamoDB
        wru = monthly_emails * email_wru + n * (POLLS_PER_INBOX_MONTH * poll_wru + refresh_wru)
        rru = monthly_emails * email_rru + n * POLLS_PER_INBOX_MONTH * poll_rru + DISPATCH_RUNS * scheduler_rru
        storage_gb = n * storage_bytes_per_inbox(results) / 1e9
        dynamodb = wru * WRU + rru * RRU + storage_gb * (STORAGE_GB_MONTH + PITR_GB_MONTH)
        # SQS: per email, and the event source mappings' polling
        sqs = monthly_emails * (sqs_std * SQS_STANDARD + sqs_fifo * SQS_FIFO) + sum(
            ESM_REQUESTS_MONTH * (SQS_FIFO if fifo else SQS_STANDARD) for fifo in mappings
        )
        sqs_requests = monthly_emails * (sqs_std + sqs_fifo) + ESM_REQUESTS_MONTH * len(mappings)
        kms_requests = monthly_emails * email_kms + n * POLLS_PER_INBOX_MONTH * poll_kms
        # KMS
        kms = keys * KMS_KEY_MONTH + (monthly_emails * email_kms + n * POLLS_PER_INBOX_MONTH * poll_kms) * KMS_REQUEST
        # Lambda: invocations and GB-seconds
        runs = sum(schedules.values())
        requests = runs + monthly_emails * queue_invocations_per_email
        seconds = runs * SCHEDULED_RUN_S + n * lambda_s_per_inbox_month
        lambda_cost = seconds * memory_gb * LAMBDA_GB_SECOND + requests * LAMBDA_REQUEST
        log_bytes = sum(schedules[f] * (logs_per_run.get(f, 1000) + PLATFORM_LOG_BYTES) for f in schedules)
        log_gb = (log_bytes + monthly_emails * queue_log_bytes) / 1e9
        traces = min(requests, SECONDS) + 0.05 * max(0.0, requests - SECONDS)
        xray = max(0.0, traces - XRAY_FREE_TRACES) * XRAY_TRACE
        metrics = metrics_idle if n == 0 else metrics_all
        cloudwatch = alarms * ALARM_MONTH + metrics * METRIC_MONTH + dashboards * DASHBOARD_MONTH + log_gb * LOGS_GB
        total = dynamodb + sqs + kms + lambda_cost + cloudwatch + xray
        free_total = total - (
            min(storage_gb, FREE["dynamodb_storage_gb"]) * STORAGE_GB_MONTH
            + min(sqs_requests, FREE["sqs_requests"]) * SQS_STANDARD
            + min(kms_requests, FREE["kms_requests"]) * KMS_REQUEST
            + min(requests, FREE["lambda_requests"]) * LAMBDA_REQUEST
            + min(seconds * memory_gb, FREE["lambda_gb_seconds"]) * LAMBDA_GB_SECOND
            + min(alarms, FREE["alarms"]) * ALARM_MONTH
            + min(metrics, FREE["metrics"]) * METRIC_MONTH
            + min(dashboards, FREE["dashboards"]) * DASHBOARD_MONTH
            + min(log_gb, FREE["log_gb"]) * LOGS_GB
        )
        rows.append(
            {
                "inboxes": n,
                "emails": monthly_emails,
                "dynamodb": dynamodb,
                "sqs": sqs,
                "kms": kms,
                "lambda": lambda_cost,
                "cloudwatch": cloudwatch,
                "xray": xray,
                "total": total,
                "total_free_tier": free_total,
            }
        )
    idle = rows[0]["total"]
    print("monthly AWS cost, us-east-1 on demand, 50 emails per inbox per day (prices in the module docstring):")
    print(
        f"  fixed: {alarms} alarms, {metrics_all} custom metrics ({metrics_idle} emitted by the schedules every run, "
        f"counted when idle), {keys} KMS keys, {dashboards} dashboard(s), {len(mappings)} SQS event source mappings"
    )
    print(
        f"  per email: {email_wru:.2f} WRU, {email_rru:.2f} RRU, {sqs_std + sqs_fifo:.2f} SQS requests, "
        f"{email_kms:.3f} KMS requests, {queue_invocations_per_email:.2f} queue-triggered invocations"
    )
    print(
        f"  Lambda: {lambda_s_per_inbox_month:.0f} s per inbox-month ({memory_gb * 1024:.0f} MB), "
        f"{sum(schedules.values()):,.0f} scheduled runs a month ("
        + ", ".join(f"{f} {r:,.0f}" for f, r in schedules.items())
        + ")"
    )
    print(
        f"  per inbox poll ({poll_source}): {poll_wru:.2f} WRU, {poll_rru:.2f} RRU, {poll_kms:.4f} KMS"
        + (f"; token refreshes {refresh_wru:.0f} WRU per inbox-month" if refresh_wru else "")
    )
    columns = [("inboxes", 8), ("emails/mo", 11), ("DynamoDB", 10), ("SQS", 8), ("KMS", 8), ("Lambda", 9)]
    columns += [("CloudWatch", 11), ("X-Ray", 8), ("total", 10), ("per inbox", 10), ("free tier", 10)]
    print("  " + " ".join(f"{name:>{width}}" for name, width in columns))
    for row in rows:
        per_inbox = row["total"] / row["inboxes"] if row["inboxes"] else 0.0
        print(
            f"  {row['inboxes']:>8,.0f} {row['emails']:>11,.0f} {row['dynamodb']:>10.2f} {row['sqs']:>8.2f} "
            f"{row['kms']:>8.2f} {row['lambda']:>9.2f} {row['cloudwatch']:>11.2f} {row['xray']:>8.2f} "
            f"{row['total']:>10.2f} {per_inbox:>10.3f} {row['total_free_tier']:>10.2f}"
        )
    print("  (free tier: the same month in an account of sendwell's own, after AWS's always-free tier)")
    idle_free = rows[0]["total_free_tier"]
    print(
        f"  idle deployment (0 inboxes): ${idle:.2f} a month (target <= $5): {'met' if idle <= 5 else 'NOT met'}; "
        f"${idle_free:.2f} after the always-free tier: {'met' if idle_free <= 5 else 'NOT met'}"
    )
    esm = sum(ESM_REQUESTS_MONTH * (SQS_FIFO if fifo else SQS_STANDARD) for fifo in mappings)
    print(
        f"    of which: {alarms} alarms ${alarms * ALARM_MONTH:.2f}, "
        f"{metrics_idle} metrics ${metrics_idle * METRIC_MONTH:.2f},"
        f" dashboard ${dashboards * DASHBOARD_MONTH:.2f}, {keys} KMS keys ${keys * KMS_KEY_MONTH:.2f}, "
        f"{len(mappings)} event source mappings polling ${esm:.2f}"
    )
    workload_poll = POLLS_PER_INBOX_MONTH * (
        get(results, w, "poll_write_units_per_inbox_poll", default=0) * WRU
        + get(results, w, "poll_read_units_per_inbox_poll", default=0) * RRU
        + poll_kms * KMS_REQUEST
    )
    print(
        f"    for comparison, the workload's own polls (replies, token refreshes, cursor saves): "
        f"{get(results, w, 'poll_write_units_per_inbox_poll', default=0):.2f} WRU and "
        f"{get(results, w, 'poll_read_units_per_inbox_poll', default=0):.2f} RRU per inbox poll, "
        f"${workload_poll:.4f} per inbox-month"
    )
    print(
        f"  polling per inbox-month ({POLLS_PER_INBOX_MONTH:,} polls): ${polling_per_inbox:.4f} DynamoDB and KMS "
        f"(target <= $0.02): {'met' if polling_per_inbox <= 0.02 else 'NOT met'}; with Lambda time "
        f"({PROVIDER_POLL_S * 1000:.0f} ms provider call each, {POLL_THREADS} at once): "
        f"${polling_per_inbox + POLLS_PER_INBOX_MONTH * POLL_BILLED_S * memory_gb * LAMBDA_GB_SECOND:.4f}"
    )
    record(
        "cost_model",
        {
            "rows": {
                str(int(row["inboxes"])): {
                    k: figure(v, "USD/month" if k not in ("inboxes", "emails") else k) for k, v in row.items()
                }
                for row in rows
            },
            "idle_usd_month": figure(idle, "USD/month"),
            "idle_target_met": figure("yes" if idle <= 5 else "no", "<= $5"),
            "idle_usd_month_free_tier": figure(idle_free, "USD/month"),
            "polling_usd_per_inbox_month": figure(polling_per_inbox, "USD/inbox-month"),
            "polling_target_met": figure("yes" if polling_per_inbox <= 0.02 else "no", "<= $0.02"),
            "counts": {
                "alarms": figure(alarms, "alarms"),
                "custom_metrics": figure(metrics_all, "metrics"),
                "custom_metrics_idle": figure(metrics_idle, "metrics"),
                "kms_keys": figure(keys, "keys"),
                "dashboards": figure(dashboards, "dashboards"),
                "sqs_event_source_mappings": figure(len(mappings), "mappings"),
            },
            "poll_source": figure(poll_source, "source"),
        },
    )


def poll_scale_entry(results: Mapping[str, Any]) -> str | None:
    """The largest N that bench_poll_scale measured ("n10000"), if it ran."""
    entries = [
        name
        for name, entry in results.get("poll_scale", {}).items()
        if name.startswith("n")
        and name[1:].isdigit()
        and isinstance(entry, Mapping)
        and "write_units_per_poll" in entry
    ]
    return max(entries, key=lambda name: int(name[1:]), default=None)


def storage_bytes_per_inbox(results: Mapping[str, Any]) -> float:
    """What an inbox keeps in DynamoDB after RETENTION_MONTHS: its row, its credentials, and its
    enrollments (one per 3 emails: 3 steps each) and activity entries, with index entries."""
    w = "workload"
    inbox = get(results, w, "item_bytes", "inbox", default=1200) + ITEM_OVERHEAD
    credentials = get(results, w, "item_bytes", "credentials", default=3800) + ITEM_OVERHEAD
    enrollment = get(results, w, "item_bytes", "enrollment", default=800) + ITEM_OVERHEAD + 2 * (60 + ITEM_OVERHEAD)
    activity = get(results, w, "item_bytes", "activity", default=300) + ITEM_OVERHEAD
    emails = EMAILS_PER_INBOX_DAY * DAYS * RETENTION_MONTHS
    replies = emails * get(results, w, "workload", "reply_rate", default=0.05)
    return inbox + credentials + math.ceil(emails / 3) * enrollment + 2 * replies * activity


if __name__ == "__main__":
    main()
