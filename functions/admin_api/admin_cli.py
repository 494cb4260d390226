"""sendwell admin CLI: the admin API's service functions, from a terminal with AWS credentials.

It reads the same SENDWELL_* settings the functions get (see `make run`'s printout for a local
stack, or the deployed stack's function environment) and calls the same service functions the
IAM-authorised admin API calls, so both always behave alike.

    python functions/admin_api/admin_cli.py create-inbox --provider gmail --address a@x.com --owner o@x.com
    python functions/admin_api/admin_cli.py link ibx_123 --days 3 --backlog paced --revoke-older
    python functions/admin_api/admin_cli.py owner-link dana@client.example --days 3
    python functions/admin_api/admin_cli.py links ibx_123
    python functions/admin_api/admin_cli.py revoke-link ibx_123 lnk_456
    python functions/admin_api/admin_cli.py status ibx_123
    python functions/admin_api/admin_cli.py pause ibx_123 | resume ibx_123
    python functions/admin_api/admin_cli.py create-campaign campaign.json
    python functions/admin_api/admin_cli.py import cmp_123 prospects.csv
    python functions/admin_api/admin_cli.py suppressions [--reason bounced]
    python functions/admin_api/admin_cli.py suppress dana@client.example --note "asked by phone"
    python functions/admin_api/admin_cli.py unsuppress dana@client.example
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

from aws_lambda_powertools.utilities.parameters import get_parameter

from sendwell.clock import utcnow
from sendwell.config import Settings
from sendwell.failures import Provider
from sendwell.models import BacklogMode, Models, SuppressionReason, bind_models
from sendwell.prospects import ProspectImportError
from sendwell.services import campaigns, inboxes, links, owner_links, suppression


def _actor() -> str:
    return f"cli:{os.environ.get('USER') or getpass.getuser()}"


def _print(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str))


def run(argv: list[str], models: Models, settings: Settings) -> int:
    parser = argparse.ArgumentParser(prog="sendwell-admin", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    create = commands.add_parser("create-inbox", help="add an inbox; prints it and a connect link")
    create.add_argument("--provider", required=True, choices=[p.value for p in Provider])
    create.add_argument("--address", required=True)
    create.add_argument("--owner", required=True, help="the mailbox owner's email")
    create.add_argument("--name", default="", help="display name on sent mail")
    create.add_argument("--timezone", default="UTC")
    create.add_argument("--daily-cap", type=int, default=50)
    for option in ("--smtp-host", "--imap-host", "--username"):
        create.add_argument(option)
    create.add_argument("--smtp-port", type=int)
    create.add_argument("--imap-port", type=int)
    link = commands.add_parser("link", help="create a shareable reconnect link")
    link.add_argument("inbox_id")
    link.add_argument("--days", type=float, default=7)
    link.add_argument("--backlog", choices=[m.value for m in BacklogMode], default=BacklogMode.PACED.value)
    link.add_argument("--revoke-older", action="store_true")
    owner_link = commands.add_parser("owner-link", help="one reconnect link for all of an owner's disconnected inboxes")
    owner_link.add_argument("owner_email")
    owner_link.add_argument("--days", type=float, default=7)
    owner_link.add_argument("--backlog", choices=[m.value for m in BacklogMode], default=BacklogMode.PACED.value)
    for name in ("links", "status", "pause", "resume"):
        commands.add_parser(name).add_argument("inbox_id")
    revoke = commands.add_parser("revoke-link")
    revoke.add_argument("inbox_id")
    revoke.add_argument("link_id")
    campaign = commands.add_parser("create-campaign", help="from a JSON file (same body as the admin API)")
    campaign.add_argument("file", type=Path)
    listed = commands.add_parser("suppressions", help="list the suppression list (every page)")
    listed.add_argument("--reason", choices=[r.value for r in SuppressionReason])
    suppress = commands.add_parser("suppress", help="add an address to the suppression list")
    suppress.add_argument("email")
    suppress.add_argument("--note", default="")
    commands.add_parser("unsuppress", help="take an address off the suppression list").add_argument("email")
    imported = commands.add_parser("import", help="import prospects from a CSV file, all or nothing")
    imported.add_argument("campaign_id")
    imported.add_argument("file", type=Path)
    args = parser.parse_args(argv)
    now = utcnow()

    try:
        if args.command == "create-inbox":
            inbox = inboxes.create_inbox(
                models,
                inboxes.NewInbox(
                    provider=Provider(args.provider),
                    address=args.address,
                    owner_email=args.owner,
                    display_name=args.name,
                    timezone=args.timezone,
                    daily_cap=args.daily_cap,
                    smtp_host=args.smtp_host,
                    smtp_port=args.smtp_port,
                    imap_host=args.imap_host,
                    imap_port=args.imap_port,
                    username=args.username,
                ),
                now=now,
                created_by=_actor(),
            )
            issued = links.create_link(models, inbox_id=inbox.inbox_id, created_by=_actor(), now=now)
            _print({**inboxes.describe(inbox), "connect_url": f"{settings.public_base_url}/r/{issued.token}"})
        elif args.command == "link":
            inboxes.get_inbox(models, args.inbox_id)
            issued = links.create_link(
                models,
                inbox_id=args.inbox_id,
                created_by=_actor(),
                now=now,
                lifetime=timedelta(days=args.days),
                backlog_mode=BacklogMode(args.backlog),
                revoke_older=args.revoke_older,
            )
            _print(
                {
                    "link_id": issued.link.link_id,
                    "url": f"{settings.public_base_url}/r/{issued.token}",
                    "expires_at": issued.link.expires_at,
                }
            )
        elif args.command == "owner-link":
            waiting = owner_links.disconnected_of(models, args.owner_email)
            issued = links.create_owner_link(
                models,
                owner_email=args.owner_email,
                created_by=_actor(),
                now=now,
                lifetime=timedelta(days=args.days),
                backlog_mode=BacklogMode(args.backlog),
            )
            _print(
                {
                    "link_id": issued.link.link_id,
                    "url": f"{settings.public_base_url}/r/{issued.token}",
                    "expires_at": issued.link.expires_at,
                    "inboxes": [inbox.address for inbox in waiting],
                }
            )
        elif args.command == "links":
            _print(
                [
                    {"link_id": lk.link_id, "state": lk.state, "created_by": lk.created_by, "expires_at": lk.expires_at}
                    for lk in links.list_links(models, args.inbox_id)
                ]
            )
        elif args.command == "revoke-link":
            if not links.revoke(models, args.link_id, inbox_id=args.inbox_id):
                print(f"no active link {args.link_id} on {args.inbox_id}", file=sys.stderr)
                return 1
            print(f"revoked {args.link_id}")
        elif args.command == "status":
            _print(inboxes.describe(inboxes.get_inbox(models, args.inbox_id)))
        elif args.command in ("pause", "resume"):
            inbox = inboxes.set_paused(models, args.inbox_id, paused=args.command == "pause", now=now, actor=_actor())
            _print(inboxes.describe(inbox))
        elif args.command == "create-campaign":
            spec = campaigns.CampaignSpec.from_json(json.loads(args.file.read_text(encoding="utf-8")))
            created = campaigns.create_campaign(models, spec, now=now, actor=_actor())
            _print({"campaign_id": created.campaign_id, "name": created.name})
        elif args.command == "import":
            result = campaigns.import_prospects(
                models, args.campaign_id, args.file.read_bytes(), now=now, actor=_actor()
            )
            _print({"campaign_id": result.campaign_id, "imported": result.imported, "suppressed": result.suppressed})
        elif args.command == "suppressions":
            reason = SuppressionReason(args.reason) if args.reason else None
            entries, cursor = [], None
            while True:
                page = suppression.list_entries(models, reason=reason, cursor=cursor)
                entries += [suppression.describe(e) for e in page.entries]
                if (cursor := page.cursor) is None:
                    break
            _print(entries)
        elif args.command == "suppress":
            email = suppression.normalise(args.email)
            added = suppression.suppress(
                models, email, reason=SuppressionReason.MANUAL, now=now, source=_actor(), note=args.note or None
            )
            stopped = campaigns.stop_address(models, email, now=now, reason="suppressed by an admin")
            entry = suppression.get(models, email)
            _print({**(suppression.describe(entry) if entry else {}), "added": added, "enrollments_stopped": stopped})
        elif args.command == "unsuppress":
            if not suppression.remove(models, args.email):
                print(f"{args.email} is not suppressed", file=sys.stderr)
                return 1
            print(f"removed {suppression.normalise(args.email)}")
    except ProspectImportError as error:
        for row in error.errors:
            print(f"line {row.line}: {row.field or ''}: {row.message}", file=sys.stderr)
        return 2
    except (inboxes.InboxError, campaigns.CampaignError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


def main() -> int:
    settings = Settings.from_env(os.environ, read_parameter=get_parameter)
    return run(sys.argv[1:], bind_models(settings.tables, region=settings.region), settings)


if __name__ == "__main__":
    sys.exit(main())
