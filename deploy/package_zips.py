"""`python -m deploy.package_zips build/package`: the zips the functions deploy, made from the one zip `chalice
package` writes there (deployment.zip: every function's code and every dependency).

Chalice has no exclude option and gives every function the same zip; this rewrites it:
- **Left out**: what the Lambda runtime provides (boto3, botocore, s3transfer, and their own dependencies
  urllib3, python-dateutil, jmespath and six: the Tracer's aws-xray-sdk depends on botocore, so Chalice vendors
  them all), and what no function runs: PyYAML's C extension (policies are read with the pure SafeLoader, which
  keeps line numbers), type stubs, and every part of Powertools no function imports (its event handler alone is
  half a megabyte zipped).
- **Compiled**: every module the functions import, for the runtime's Python (this build's, which must be the
  runtime's: 3.11), as unchecked-hash .pyc files. /var/task is read-only, so without them every cold start
  compiles them again; unchecked, they are loaded without a look at the sources. Ours (app.py, chalicelib) keep
  their sources, their bytecode in `__pycache__`; a dependency's module ships its bytecode in place of its
  source (`module.pyc`, which Python loads when there is no `module.py`): a traceback through it names the file
  and line, without the line's text. Modules no function imports keep their sources, and compile if ever used.
- **Added**: botocore's EC2 model cut to the operations the bots call (deploy/service_models.py), which their
  clients read instead of the whole (80 ms of a cold start).
- **Split**: `deployment.zip` without the imaging libraries (Pillow and pillow-heif, 12 MB zipped), for every
  function but the thumbnail bot's; `thumbnails.zip` with them, which deploy/finish_template.py names as the
  thumbnail bot's functions' code.
"""

from __future__ import annotations

import json
import os
import py_compile
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path

from chalicelib.settings import SHIPPED_MODELS
from deploy.service_models import write as write_service_models

RUNTIME_PYTHON = (3, 11)  # .chalice's functions run python3.11
PROVIDED = ("boto3", "botocore", "s3transfer", "urllib3", "dateutil", "jmespath", "six")
PROVIDED_DISTRIBUTIONS = ("boto3", "botocore", "s3transfer", "urllib3", "python_dateutil", "jmespath", "six")
IMAGING = ("PIL", "pillow.libs", "pillow_heif", "pillow_heif.libs", "_pillow_heif")
IMAGING_DISTRIBUTIONS = ("pillow", "pillow_heif")
THUMBNAILS_ZIP = "thumbnails.zip"
# What the functions import only when they first need it, beyond every chalicelib module: the run-once table
# (chalicelib/dedupe.py), email and page templates (chalicelib/notify.py), the prod stage's tracer
# (chalicelib/observability.py), HEIC (chalicelib/thumbnails/imaging.py).
LAZY_IMPORTS = (
    "from aws_lambda_powertools.utilities.idempotency import"
    " DynamoDBPersistenceLayer, IdempotencyConfig, idempotent_function",
    "from aws_lambda_powertools.utilities.idempotency.exceptions import IdempotencyPersistenceLayerError",
    "import jinja2",
    "from aws_lambda_powertools import Tracer",
    "import pillow_heif",
)
# Run in the unzipped code, with the runtime's boto3 on the path: prints the files of every module loaded.
PROBE = """
import importlib, json, pkgutil, sys
import app, chalicelib
for found in pkgutil.walk_packages(chalicelib.__path__, "chalicelib."):
    importlib.import_module(found.name)
{lazy}
from chalicelib.policy import load_policies
load_policies("policies")
print(json.dumps([module.__file__ for module in list(sys.modules.values()) if getattr(module, "__file__", None)]))
"""


def top_of(name: str) -> str:
    return name.split("/")[0]


def _distribution(top: str) -> str | None:
    """The distribution a `<name>-<version>.dist-info` folder records (lowercase, `-` as `_`), else None."""
    return top.split("-")[0].lower().replace(".", "_") if top.endswith(".dist-info") else None


def provided(name: str) -> bool:
    top = top_of(name)
    return top.removesuffix(".py") in PROVIDED or _distribution(top) in PROVIDED_DISTRIBUTIONS


def imaging(name: str) -> bool:
    top = top_of(name)
    return top.split(".")[0] in IMAGING or top in IMAGING or _distribution(top) in IMAGING_DISTRIBUTIONS


def never_run(name: str, imported: frozenset[str]) -> bool:
    """A file no function runs: PyYAML's C extension, type stubs, and Powertools' parts no function imports."""
    parts = name.split("/")
    if parts[0] == "yaml" and parts[-1].startswith("_yaml."):
        return True
    if name.endswith(".pyi") or parts[0].endswith("-stubs"):
        return True
    if parts[:2] == ["pydantic", "v1"]:  # pydantic's copy of its version 1, which nothing here imports
        return True
    if parts[0] == "aws_lambda_powertools" and len(parts) > 2:
        depth = 3 if parts[1] == "utilities" else 2  # a part: a subpackage, or one of the utilities
        if len(parts) > depth:
            part = "/".join(parts[:depth]) + "/"
            return not any(module.startswith(part) for module in imported)
    return False


def as_on_lambda(task: Path, code: str) -> list[str]:
    """The command that runs `code` in the unzipped code in `task` as Lambda runs it: -I, nothing of this machine's
    environment on the path (the zip's code first, then the runtime's boto3); -B, no bytecode of its own left
    behind, so what loads is what the zip ships."""
    import boto3  # the runtime's, as on Lambda

    runtime = str(Path(boto3.__file__).parent.parent)
    return [sys.executable, "-I", "-B", "-c", f"import sys; sys.path[:0] = {[str(task), runtime]!r}\n{code}"]


def imported_modules(task: Path) -> frozenset[str]:
    """The files (relative to `task`) of every module the functions import, as a probe in `task` loads them."""
    environment = {
        **os.environ,
        "AWS_DEFAULT_REGION": os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
    }
    done = subprocess.run(
        as_on_lambda(task, PROBE.format(lazy="\n".join(LAZY_IMPORTS))),
        cwd=task,
        env=environment,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        raise RuntimeError(f"the functions' modules do not import from the zip:\n{done.stderr[-3000:]}")
    files = (Path(file) for file in json.loads(done.stdout.splitlines()[-1]))
    return frozenset(file.relative_to(task).as_posix() for file in files if file.is_relative_to(task))


def ours(name: str) -> bool:
    return name == "app.py" or top_of(name) == "chalicelib"


def compile_for_runtime(task: Path, modules: Iterable[str]) -> None:
    """Each module's bytecode: ours beside the source, a dependency's in place of it."""
    if sys.version_info[:2] != RUNTIME_PYTHON:
        raise RuntimeError(f"bytecode for python{'.'.join(map(str, RUNTIME_PYTHON))} needs that Python to build it")
    for module in modules:
        if not module.endswith(".py"):
            continue
        source = task / module
        py_compile.compile(
            str(source),
            cfile=None if ours(module) else str(source.with_suffix(".pyc")),  # None: __pycache__/<module>.cpython-311
            dfile=f"/var/task/{module}",  # where the runtime finds it: tracebacks name it there
            doraise=True,
            invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
        )
        if not ours(module):
            source.unlink()


def write_zip(path: Path, task: Path, ships: Callable[[str], bool]) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for file in sorted(task.rglob("*")):
            name = file.relative_to(task).as_posix()
            if file.is_file() and ships(name):
                archive.write(file, name)


def main(package_dir: str) -> None:
    out = Path(package_dir)
    with tempfile.TemporaryDirectory(prefix="opsbots-package-") as folder:
        task = Path(folder)
        with zipfile.ZipFile(out / "deployment.zip") as chalice_zip:
            chalice_zip.extractall(task)
        for name in [path.relative_to(task).as_posix() for path in task.rglob("*") if path.is_file()]:
            if provided(name):
                (task / name).unlink()
        write_service_models(task / SHIPPED_MODELS.name)
        imported = imported_modules(task)
        compile_for_runtime(task, imported)
        for name in [path.relative_to(task).as_posix() for path in task.rglob("*") if path.is_file()]:
            if never_run(name, imported):
                (task / name).unlink()
        for folder_left in sorted(task.rglob("*"), reverse=True):  # drop the folders emptied
            if folder_left.is_dir() and not any(folder_left.iterdir()):
                folder_left.rmdir()
        write_zip(out / THUMBNAILS_ZIP, task, lambda name: True)
        write_zip(out / "deployment.zip", task, lambda name: not imaging(name))


if __name__ == "__main__":
    main(sys.argv[1])
