"""template.yaml as every tier reads it, and the parameters the tests deploy it with.

Light on purpose (``local.cfn`` reads YAML, nothing more): the unit tier imports it too, and must not
pull in moto or boto3 machinery. The deployment itself is ``tests.deployment``.
"""

from __future__ import annotations

from local.cfn import load_template

TEMPLATE = load_template()
REGION = "us-east-1"
PUBLIC_BASE_URL = "https://sendwell.example.test"
PARAMETERS = {
    "AdminEmails": "admin@agency.example",
    "SenderAddress": "notices@agency.example",
    "SesIdentity": "agency.example",
    "WorkspaceName": "Acme Outreach",
}
