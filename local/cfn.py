"""Just enough CloudFormation to build the deployed resources from template.yaml on moto.

The local stack and the tests create every table, queue, topic and key from the template's own
definitions, so neither can drift from what ``sam deploy`` creates. Only the resource types and
intrinsic functions this template uses are understood; anything else fails loudly.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE_PATH = ROOT / "template.yaml"

_SHORT_TAGS = {
    "!Ref": "Ref",
    "!GetAtt": "Fn::GetAtt",
    "!Sub": "Fn::Sub",
    "!Join": "Fn::Join",
    "!If": "Fn::If",
    "!Equals": "Fn::Equals",
    "!Not": "Fn::Not",
    "!And": "Fn::And",
    "!Or": "Fn::Or",
    "!Select": "Fn::Select",
    "!Split": "Fn::Split",
    "!FindInMap": "Fn::FindInMap",
    "!Condition": "Condition",
}


class _TemplateLoader(yaml.SafeLoader):  # type: ignore[misc]  # PyYAML ships no type hints
    """YAML loader that turns CloudFormation short tags into their long dictionary form."""


def _construct_tag(loader: _TemplateLoader, tag_suffix: str, node: yaml.Node) -> dict[str, Any]:
    tag = "!" + tag_suffix
    if tag not in _SHORT_TAGS:
        raise ValueError(f"unsupported CloudFormation tag {tag}")
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if tag == "!GetAtt":
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {_SHORT_TAGS[tag]: value}


_TemplateLoader.add_multi_constructor("!", _construct_tag)


def load_template(path: Path = TEMPLATE_PATH) -> dict[str, Any]:
    """The template as CloudFormation sees it after the AWS::LanguageExtensions transform."""
    with path.open(encoding="utf-8") as handle:
        loaded: dict[str, Any] = yaml.load(handle, Loader=_TemplateLoader)  # noqa: S506 - a SafeLoader subclass
    return expand_language_extensions(loaded)


_FOR_EACH = "Fn::ForEach::"


def expand_language_extensions(template: Mapping[str, Any]) -> dict[str, Any]:
    """Expand ``Fn::ForEach`` in Resources, Conditions and Outputs, and resolve the ``Fn::FindInMap``
    whose keys are then literal, as the AWS::LanguageExtensions transform does before deployment.

    Collections must be literal lists: the template loops over names it declares itself.
    """
    expanded = dict(template)
    for section in ("Resources", "Conditions", "Outputs"):
        if section in template:
            expanded[section] = _expand_for_each(template[section])
    mappings = template.get("Mappings", {})
    return {key: _find_in_map(value, mappings) for key, value in expanded.items()}


def _expand_for_each(section: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in section.items():
        if not key.startswith(_FOR_EACH):
            entries = {key: value}
        else:
            identifier, collection, fragment = value
            if not isinstance(collection, list) or not all(isinstance(item, str) for item in collection):
                raise ValueError(f"{key}: only a literal list of strings is supported locally")
            entries = {}
            for item in collection:
                entries.update(_expand_for_each(_substitute(fragment, identifier, item)))
        for name, entry in entries.items():
            if name in out:
                raise ValueError(f"{name} is defined twice after expanding Fn::ForEach")
            out[name] = entry
    return out


def _substitute(value: Any, identifier: str, item: str) -> Any:
    """``${identifier}`` and ``&{identifier}`` in every key and string, and ``Ref: identifier``."""
    if isinstance(value, str):
        alphanumeric = re.sub(r"[^A-Za-z0-9]", "", item)
        return value.replace(f"${{{identifier}}}", item).replace(f"&{{{identifier}}}", alphanumeric)
    if isinstance(value, list):
        return [_substitute(element, identifier, item) for element in value]
    if isinstance(value, dict):
        if value == {"Ref": identifier}:
            return item
        return {_substitute(k, identifier, item): _substitute(v, identifier, item) for k, v in value.items()}
    return value


def _find_in_map(value: Any, mappings: Mapping[str, Any]) -> Any:
    if isinstance(value, list):
        return [_find_in_map(element, mappings) for element in value]
    if not isinstance(value, dict):
        return value
    lookup = value.get("Fn::FindInMap") if len(value) == 1 else None
    if isinstance(lookup, list) and len(lookup) == 3 and all(isinstance(part, str) for part in lookup):
        name, top, second = lookup
        return mappings[name][top][second]
    return {key: _find_in_map(element, mappings) for key, element in value.items()}


def resources_of_type(template: Mapping[str, Any], resource_type: str) -> dict[str, dict[str, Any]]:
    return {
        logical_id: resource
        for logical_id, resource in template["Resources"].items()
        if resource["Type"] == resource_type
    }


def table_definition(properties: Mapping[str, Any], table_name: str) -> dict[str, Any]:
    """boto3 ``create_table`` arguments for an ``AWS::DynamoDB::Table``'s properties."""
    definition: dict[str, Any] = {
        "TableName": table_name,
        "BillingMode": properties["BillingMode"],
        "AttributeDefinitions": properties["AttributeDefinitions"],
        "KeySchema": properties["KeySchema"],
    }
    if "GlobalSecondaryIndexes" in properties:
        definition["GlobalSecondaryIndexes"] = properties["GlobalSecondaryIndexes"]
    if properties.get("SSESpecification", {}).get("SSEEnabled"):
        definition["SSESpecification"] = {"Enabled": True}
    return definition


@dataclass
class Stack:
    """Physical ids and attributes of the resources created for one local deployment."""

    prefix: str
    parameters: dict[str, str]
    refs: dict[str, str] = field(default_factory=dict)
    attributes: dict[tuple[str, str], str] = field(default_factory=dict)


def placeholder_stack(
    template: Mapping[str, Any], *, prefix: str, parameters: Mapping[str, str] | None = None
) -> Stack:
    """A stack nothing was created for: each resource's Ref is a made-up name. Enough for the
    environment of a function that calls nothing, as when only its handler module is imported."""
    values = {name: str(spec.get("Default", "")) for name, spec in template.get("Parameters", {}).items()}
    refs = {logical_id: f"{prefix}-{logical_id}" for logical_id in template["Resources"]}
    return Stack(prefix=prefix, parameters=values | dict(parameters or {}), refs=refs)


def create_resources(
    template: Mapping[str, Any], session: Any, *, prefix: str, parameters: Mapping[str, str] | None = None
) -> Stack:
    """Create the stateful resources of ``template`` through ``session`` (a boto3 session)."""
    declared = template.get("Parameters", {})
    values = {name: str(spec.get("Default", "")) for name, spec in declared.items()}
    values.update(parameters or {})
    stack = Stack(prefix=prefix, parameters=values)
    region = session.region_name
    account = "123456789012"

    dynamodb = session.client("dynamodb")
    for logical_id, resource in resources_of_type(template, "AWS::DynamoDB::Table").items():
        name = f"{prefix}-{logical_id}"
        dynamodb.create_table(**table_definition(resource["Properties"], name))
        ttl = resource["Properties"].get("TimeToLiveSpecification")
        if ttl:
            dynamodb.update_time_to_live(
                TableName=name,
                TimeToLiveSpecification={"AttributeName": ttl["AttributeName"], "Enabled": True},
            )
        stack.refs[logical_id] = name
        stack.attributes[(logical_id, "Arn")] = f"arn:aws:dynamodb:{region}:{account}:table/{name}"

    sqs = session.client("sqs")
    queues = resources_of_type(template, "AWS::SQS::Queue")
    # Dead-letter queues first, so redrive policies can point at them.
    ordered = sorted(queues.items(), key=lambda item: "RedrivePolicy" in item[1].get("Properties", {}))
    for logical_id, resource in ordered:
        props = resource.get("Properties", {})
        fifo = bool(props.get("FifoQueue"))
        name = f"{prefix}-{logical_id}" + (".fifo" if fifo else "")
        attributes = {"VisibilityTimeout": str(props.get("VisibilityTimeout", 30))}
        if fifo:
            attributes["FifoQueue"] = "true"
            attributes["ContentBasedDeduplication"] = str(bool(props.get("ContentBasedDeduplication"))).lower()
        if "RedrivePolicy" in props:
            redrive = props["RedrivePolicy"]
            target = redrive["deadLetterTargetArn"]["Fn::GetAtt"][0]
            attributes["RedrivePolicy"] = json.dumps(
                {
                    "deadLetterTargetArn": stack.attributes[(target, "Arn")],
                    "maxReceiveCount": str(redrive["maxReceiveCount"]),
                }
            )
        url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
        stack.refs[logical_id] = url
        stack.attributes[(logical_id, "Arn")] = f"arn:aws:sqs:{region}:{account}:{name}"
        stack.attributes[(logical_id, "QueueName")] = name

    sns = session.client("sns")
    for logical_id in resources_of_type(template, "AWS::SNS::Topic"):
        arn = sns.create_topic(Name=f"{prefix}-{logical_id}")["TopicArn"]
        stack.refs[logical_id] = arn
        stack.attributes[(logical_id, "TopicName")] = arn.rsplit(":", 1)[1]

    kms = session.client("kms")
    for logical_id, resource in resources_of_type(template, "AWS::KMS::Key").items():
        key = kms.create_key(Description=resource["Properties"].get("Description", logical_id))["KeyMetadata"]
        stack.refs[logical_id] = key["KeyId"]
        stack.attributes[(logical_id, "Arn")] = key["Arn"]

    for logical_id in resources_of_type(template, "AWS::Serverless::HttpApi"):
        stack.refs[logical_id] = "local"
    return stack


_SUB_PATTERN = re.compile(r"\$\{([^}]+)\}")


def resolve(value: Any, stack: Stack, *, pseudo: Mapping[str, str] | None = None) -> Any:
    """Evaluate the intrinsic functions in ``value`` against a created stack."""
    pseudo_values = {
        "AWS::Region": "us-east-1",
        "AWS::AccountId": "123456789012",
        "AWS::Partition": "aws",
        "AWS::URLSuffix": "amazonaws.com",
        "AWS::StackName": stack.prefix,
        **(pseudo or {}),
    }

    def ref(name: str) -> str:
        if name in pseudo_values:
            return pseudo_values[name]
        if name in stack.parameters:
            return stack.parameters[name]
        if name in stack.refs:
            return stack.refs[name]
        raise KeyError(f"cannot resolve Ref {name} locally")

    if isinstance(value, list):
        return [resolve(item, stack, pseudo=pseudo) for item in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1:
        ((key, arg),) = value.items()
        if key == "Ref":
            return ref(arg)
        if key == "Fn::GetAtt":
            return stack.attributes[(arg[0], arg[1])]
        if key == "Fn::Join":
            separator, items = arg
            joined = resolve(items, stack, pseudo=pseudo)
            parts = joined.split(",") if isinstance(joined, str) else joined
            return separator.join(str(part) for part in parts)
        if key == "Fn::Sub":
            template, variables = (arg, {}) if isinstance(arg, str) else arg
            local = {name: resolve(v, stack, pseudo=pseudo) for name, v in variables.items()}

            def substitute(match: re.Match[str]) -> str:
                name = match.group(1)
                if name in local:
                    return str(local[name])
                if "." in name:
                    logical_id, attribute = name.split(".", 1)
                    return stack.attributes[(logical_id, attribute)]
                return ref(name)

            return _SUB_PATTERN.sub(substitute, template)
    return {key: resolve(item, stack, pseudo=pseudo) for key, item in value.items()}


def function_environment(template: Mapping[str, Any], logical_id: str, stack: Stack) -> dict[str, str]:
    """The environment variables a deployed function would get (Globals plus its own)."""
    global_vars = template.get("Globals", {}).get("Function", {}).get("Environment", {}).get("Variables", {})
    own = template["Resources"][logical_id]["Properties"].get("Environment", {}).get("Variables", {})
    return {name: str(resolve(value, stack)) for name, value in {**global_vars, **own}.items()}
