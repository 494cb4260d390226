"""The benches' deployment: every resource of template.yaml in in-process moto, and every
function's environment as the template gives it (what ``local.stack`` does for ``make run``).

Called inside ``mock_aws()``; the handlers a bench then loads read their settings from
``os.environ``, as in Lambda.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from local.cfn import Stack, create_resources, function_environment, resources_of_type
from sendwell.config import Settings

PARAMETERS = {
    "AdminEmails": "admin@agency.example",
    "SenderAddress": "notices@agency.example",
    "SesIdentity": "agency.example",
}
PUBLIC_BASE_URL = "https://sendwell.agency.example"


def deploy(template: Mapping[str, Any], session: Any, *, prefix: str = "bench") -> tuple[Stack, Settings]:
    """Create the stack's resources through ``session`` and set every function's variables."""
    stack = create_resources(template, session, prefix=prefix, parameters=PARAMETERS)
    for logical_id in resources_of_type(template, "AWS::Serverless::Function"):
        os.environ.update(function_environment(template, logical_id, stack))
    os.environ["SENDWELL_PUBLIC_BASE_URL"] = PUBLIC_BASE_URL
    return stack, Settings.from_env(os.environ)
