"""Every function's cold start as Lambda runs it, against a bare boto3 handler and a boto3 + Powertools one.

What is timed is the import of the function's handler module (which builds its clients and
settings) in a fresh interpreter, in Lambda's conditions:

- ``LAMBDA_TASK_ROOT`` set and tracing on, so the Powertools tracer loads the X-Ray SDK and patches
  botocore, requests and PynamoDB, as it does in the deployed functions (``Tracing: Active``);
- the layers as ``sam build`` makes them: bytecode beside every module, and nothing written back
  (``/opt`` is read-only), so a module without usable bytecode is compiled at every cold start;
- the function's own code as ``sam build`` ships it: sources only;
- only the layers and the standard library importable (no site-packages).

The two baselines import boto3 and Powertools from the same dependency layer, so the ratios show
what sendwell adds. Each sample is a new process; the subjects take turns, so drift in the
machine's speed hits them alike; the figure is the median. The ratios are the figures to read.

The built layers (.aws-sam/build) are used as they are when they fit this interpreter and machine.
The dependency layer is built for arm64 and CPython 3.12, so elsewhere a stand-in is made: the same
distributions from this environment and the sendwell sources, compiled as the layer Makefiles do
(``compileall --invalidation-mode unchecked-hash``). ``--no-bytecode`` leaves the bytecode out, as
the layers shipped before they had any. Figures go to test-artifacts/bench-cold-start.json.

    python bench/bench_cold_start.py [--samples 7] [--no-bytecode]
"""

from __future__ import annotations

import argparse
import compileall
import importlib.machinery
import importlib.metadata
import json
import platform
import py_compile
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "layers" / "sendwell"), str(ROOT)]

from local.cfn import function_environment, load_template, placeholder_stack, resources_of_type  # noqa: E402

BUILD = ROOT / ".aws-sam" / "build"
RESULTS = ROOT / "test-artifacts" / "bench-cold-start.json"
REGION = "us-east-1"
TARGET = 1.5  # the most a function may cost at cold start, in boto3 + Powertools handlers (#13)
PARAMETERS = {
    "AdminEmails": "admin@agency.example",
    "SenderAddress": "notices@agency.example",
    "WorkspaceName": "Acme Outreach",
    # Both sign-ins configured, as a deployment that offers both has them.
    "GoogleClientId": "1234567890-bench.apps.googleusercontent.com",
    "MicrosoftClientId": "7d1f3b20-55c4-4f0e-8a3b-2c9e6d4f1a77",
}
BOTO3_HANDLER = """\
import boto3

CLIENT = boto3.client("dynamodb")


def handler(event, context):
    return {"statusCode": 200}
"""
POWERTOOLS_HANDLER = """\
import boto3
from aws_lambda_powertools import Logger, Metrics, Tracer

logger = Logger()
tracer = Tracer()
metrics = Metrics()
CLIENT = boto3.client("dynamodb")


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event, context):
    return {"statusCode": 200}
"""
BOTO3, POWERTOOLS = "boto3 only", "boto3 + Powertools"


@dataclass(frozen=True)
class Subject:
    name: str
    task_root: Path  # the function's code, as Lambda's /var/task
    module: str
    env: dict[str, str]


def compile_tree(folder: Path) -> None:
    """As layers/*/Makefile compile a layer (see there for why unchecked-hash)."""
    mode = py_compile.PycInvalidationMode.UNCHECKED_HASH
    if not compileall.compile_dir(folder, quiet=2, workers=0, invalidation_mode=mode):
        raise RuntimeError(f"could not compile everything under {folder}")


def fits_here(layer: Path) -> bool:
    """A built layer this interpreter can load: its bytecode and native extensions are for it."""
    tag = sys.implementation.cache_tag
    if not any(layer.rglob(f"*.{tag}.pyc")):
        return False
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    return all(so.name.endswith(suffixes) for so in layer.rglob("*.so"))


def built_sendwell_is_current(layer: Path) -> bool:
    sources = ROOT / "layers" / "sendwell" / "sendwell"
    for source in sources.rglob("*.py"):
        built = layer / "sendwell" / source.relative_to(sources)
        if not built.is_file() or built.read_bytes() != source.read_bytes():
            return False
    return True


def stand_in_deps(target: Path) -> None:
    """The dependency layer's distributions (layers/deps/requirements.txt), copied from this environment."""
    for line in (ROOT / "layers" / "deps" / "requirements.txt").read_text(encoding="utf-8").splitlines():
        pin = re.match(r"([A-Za-z0-9_.-]+)(?:\[[^]]*\])?==(\S+)", line.strip())
        if pin is None:
            continue
        distribution = importlib.metadata.distribution(pin[1])
        if distribution.version != pin[2]:
            print(f"  note: {pin[1]} is {distribution.version} here, {pin[2]} in the layer")
        for file in distribution.files or ():
            if file.parts[0] == ".." or "__pycache__" in file.parts or file.suffix == ".pyc":
                continue  # console scripts, and the bytecode pip wrote
            source = Path(str(distribution.locate_file(file)))
            destination = target / file
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination)


def layers(folder: Path, *, bytecode: bool) -> tuple[list[Path], str]:
    """The layers' python/ folders, in Lambda's order, and how they were come by."""
    deps, sendwell = BUILD / "DependenciesLayer" / "python", BUILD / "SendwellLayer" / "python"
    if bytecode and fits_here(deps) and fits_here(sendwell) and built_sendwell_is_current(sendwell):
        return [deps, sendwell], "as built by sam build"
    deps, sendwell = folder / "deps", folder / "sendwell"
    stand_in_deps(deps)
    shutil.copytree(ROOT / "layers" / "sendwell" / "sendwell", sendwell / "sendwell", ignore=_BYTECODE)
    how = "stand-in: this environment's copies of the layer's distributions and the sendwell sources"
    if not bytecode:
        return [deps, sendwell], how + ", without bytecode"
    compile_tree(deps)
    compile_tree(sendwell)
    return [deps, sendwell], how + ", compiled unchecked-hash"


_BYTECODE = shutil.ignore_patterns("__pycache__", "*.pyc")


def lambda_environment(task_root: Path, home: Path, name: str) -> dict[str, str]:
    """What Lambda sets for every function (tracing on), and no more: nothing from this shell."""
    return {
        "HOME": str(home),  # no ~/.aws of this machine's user
        "LAMBDA_TASK_ROOT": str(task_root),
        "AWS_LAMBDA_FUNCTION_NAME": name,
        "AWS_EXECUTION_ENV": "AWS_Lambda_python3.12",
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_SESSION_TOKEN": "bench",
        "AWS_XRAY_DAEMON_ADDRESS": "127.0.0.1:2000",
        "POWERTOOLS_SERVICE_NAME": "sendwell",
    }


def subjects(folder: Path) -> list[Subject]:
    template = load_template()
    stack = placeholder_stack(template, prefix="bench", parameters=PARAMETERS)
    found: list[Subject] = []
    for index, (name, handler) in enumerate(((BOTO3, BOTO3_HANDLER), (POWERTOOLS, POWERTOOLS_HANDLER))):
        task_root = folder / "functions" / f"baseline{index}"
        task_root.mkdir(parents=True)
        (task_root / "baseline_app.py").write_text(handler, encoding="utf-8")
        found.append(Subject(name, task_root, "baseline_app", lambda_environment(task_root, folder, name)))
    for logical_id, resource in resources_of_type(template, "AWS::Serverless::Function").items():
        properties = resource["Properties"]
        task_root = folder / "functions" / logical_id
        shutil.copytree(ROOT / properties["CodeUri"], task_root, ignore=_BYTECODE)  # sam build ships sources
        env = function_environment(template, logical_id, stack)
        # The public URL is read from SSM at cold start in AWS; here it is given, so nothing is called.
        env.pop("SENDWELL_PUBLIC_BASE_URL_PARAMETER", None)
        env["SENDWELL_PUBLIC_BASE_URL"] = "https://sendwell.bench.example"
        module = properties["Handler"].rsplit(".", 1)[0]
        found.append(Subject(logical_id, task_root, module, env | lambda_environment(task_root, folder, logical_id)))
    return found


def import_seconds(subject: Subject, layer_paths: list[Path]) -> tuple[float, float]:
    """One cold start, (CPU, wall) seconds: a new interpreter (isolated, no site-packages, writing no
    bytecode) imports the handler. The import is CPU-bound work, so CPU time is the figure: on a busy
    machine the wall clock also counts the time other processes had the CPU."""
    code = textwrap.dedent(
        f"""
        import sys, time
        sys.path[:0] = {[str(subject.task_root), *map(str, layer_paths)]!r}
        cpu, wall = time.process_time(), time.perf_counter()
        import {subject.module}
        print(time.process_time() - cpu, time.perf_counter() - wall)
        """
    )
    command = [sys.executable, "-I", "-S", "-B", "-c", code]
    done = subprocess.run(command, env=subject.env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"importing {subject.name} failed:\n{done.stderr[-3000:]}")
    cpu, wall = done.stdout.split()[-2:]
    return float(cpu), float(wall)


def rounds(found: list[Subject], layer_paths: list[Path], samples: int) -> list[dict[str, tuple[float, float]]]:
    """Each round times every subject once, (CPU, wall) seconds, with the baselines timed at its start
    and again at its end (their mean counts): a function is compared with baselines timed next to it,
    so a spell of load from other work on the machine falls on both."""
    baselines = [subject for subject in found if subject.name in (BOTO3, POWERTOOLS)]
    functions = [subject for subject in found if subject not in baselines]
    for subject in found:  # once each, untimed: the page cache holds every file from here on
        import_seconds(subject, layer_paths)
    timed: list[dict[str, tuple[float, float]]] = []
    for _ in range(samples):
        before = {subject.name: import_seconds(subject, layer_paths) for subject in baselines}
        this = {subject.name: import_seconds(subject, layer_paths) for subject in functions}
        after = {subject.name: import_seconds(subject, layer_paths) for subject in reversed(baselines)}
        for name, (cpu, wall) in before.items():
            this[name] = ((cpu + after[name][0]) / 2, (wall + after[name][1]) / 2)
        timed.append(this)
    return timed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--samples", type=int, default=7)
    parser.add_argument("--no-bytecode", action="store_true", help="the layers without bytecode, as before #13")
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        layer_paths, how = layers(folder, bytecode=not arguments.no_bytecode)
        found = subjects(folder)
        timed = rounds(found, layer_paths, arguments.samples)

    names = [subject.name for subject in found]
    cpu = {name: statistics.median(sample[name][0] for sample in timed) for name in names}
    wall = {name: statistics.median(sample[name][1] for sample in timed) for name in names}
    # Each ratio is the median of the rounds' ratios, each round's function against its own baselines.
    ratios = {
        name: tuple(
            statistics.median(sample[name][0] / sample[base][0] for sample in timed) for base in (BOTO3, POWERTOOLS)
        )
        for name in names
    }
    print(f"cold start: the handler module's import in a new interpreter, Lambda-like (median of {arguments.samples})")
    print(f"  layers: {how}")
    print(f"  Python {platform.python_version()} on {platform.machine()}; the functions run 3.12 on arm64")
    print(f"  {'':<28} {'CPU ms':>8} {'x boto3':>9} {'x boto3+PT':>11} {'wall ms':>9}")
    for name in names:
        vs_boto3, vs_powertools = ratios[name]
        over = "  over the target" if name not in (BOTO3, POWERTOOLS) and vs_powertools > TARGET else ""
        print(
            f"  {name:<28} {cpu[name] * 1000:8.1f} {vs_boto3:9.2f} {vs_powertools:11.2f} {wall[name] * 1000:9.1f}{over}"
        )

    RESULTS.parent.mkdir(exist_ok=True)
    figures = {
        "measure": "the handler module's import in a new interpreter, Lambda-like (tracing on, layers read-only)",
        "layers": how,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "samples": arguments.samples,
        "target_vs_boto3_powertools": TARGET,
        "subjects": {
            name: {
                "cpu_ms": round(cpu[name] * 1000, 1),
                "wall_ms": round(wall[name] * 1000, 1),
                "vs_boto3": round(ratios[name][0], 2),
                "vs_boto3_powertools": round(ratios[name][1], 2),
                "cpu_samples_ms": [round(sample[name][0] * 1000, 1) for sample in timed],
            }
            for name in names
        },
    }
    RESULTS.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    print(f"  written to {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
