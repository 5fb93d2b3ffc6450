"""`python -m deploy.service_models DIR`: botocore's EC2 model cut down to the operations the bots call, for
`make package` to ship and `chalicelib.aws.Clients` to load in its place.

botocore reads a service's whole model when it builds a client. EC2's has 830 operations and 4,400 shapes (5 MB
of JSON): some 80 ms of every cold container that builds an EC2 client, the security-group guard's first event
included. Cut to the operations the registry grants (chalicelib/bots.py `operations`) and the shapes they reach,
without documentation, it loads in a few. The cut model is written where botocore looks first, as
`DIR/<service>/<api version>/service-2.json` (botocore's own layout and its loader's search path, the way
`AWS_DATA_PATH` adds models); paginators, waiters and endpoint rules stay botocore's.

Only EC2 is cut: it is the one that costs (SES, DynamoDB, STS, Route53, SQS and S3 build in about 10 ms each),
its IAM actions are its operations' names, and the registry lists every one of them. Not so elsewhere:
lambda:InvokeFunction is Invoke, and the DynamoDB calls of the run-once table are granted by what a function is
(tests/support/iam.py), not listed with its bot's calls. A call outside the cut model fails as an unknown
method: the whole test suite and the demo run the bots through it (tests/support/aws.py, demo/environment.py),
and every call they make is granted in IAM already.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import botocore.loaders

from chalicelib.bots import operations

CUT = ("ec2",)
SERVICE_MODEL = "service-2"


def cut(model: Mapping[str, Any], kept: Iterable[str]) -> dict[str, Any]:
    """`model` with only the operations `kept` and the shapes they reach, documentation left out."""
    shapes = model["shapes"]
    reached: set[str] = set()

    def reach(name: str) -> None:
        if name in reached:
            return
        reached.add(name)
        shape = shapes[name]
        for edge in ("member", "key", "value"):
            if edge in shape:
                reach(shape[edge]["shape"])
        for member in shape.get("members", {}).values():
            reach(member["shape"])

    kept_operations = {name: model["operations"][name] for name in sorted(kept)}
    for operation in kept_operations.values():
        for edge in ("input", "output"):
            if edge in operation:
                reach(operation[edge]["shape"])
        for error in operation.get("errors", ()):
            reach(error["shape"])
    found = {**model, "operations": kept_operations, "shapes": {name: shapes[name] for name in sorted(reached)}}
    return {key: _undocumented(value) for key, value in found.items()}


def _undocumented(value: Any) -> Any:
    if isinstance(value, dict):  # a doc string, never a member that happens to be called "documentation"
        return {
            key: _undocumented(item)
            for key, item in value.items()
            if not (key == "documentation" and isinstance(item, str))
        }
    if isinstance(value, list):
        return [_undocumented(item) for item in value]
    return value


def write(directory: Path) -> list[Path]:
    """The cut models of this botocore's services, under `directory` in botocore's layout; returns their files."""
    loader = botocore.loaders.create_loader()  # botocore's own models only
    written = []
    for service in CUT:
        version = loader.determine_latest_version(service, SERVICE_MODEL)
        model = loader.load_service_model(service, SERVICE_MODEL, version)
        path = directory / service / version / f"{SERVICE_MODEL}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(cut(model, operations(service)), separators=(",", ":"), sort_keys=True))
        written.append(path)
    return written


if __name__ == "__main__":
    for file in write(Path(sys.argv[1])):
        print(file)
