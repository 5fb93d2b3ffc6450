"""The cut botocore models the zips ship (deploy/service_models.py): the operations the bots are granted, every
shape they reach, no documentation; a client built from them has those methods and no others."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import boto3
import botocore.loaders
import botocore.session

from chalicelib.bots import operations
from deploy.service_models import cut, write

MODEL: dict[str, Any] = {
    "version": "2.0",
    "metadata": {"protocol": "ec2", "apiVersion": "2016-11-15", "documentation": "kept out"},
    "operations": {
        "Kept": {"name": "Kept", "input": {"shape": "KeptRequest"}, "documentation": "kept out"},
        "Dropped": {"name": "Dropped", "input": {"shape": "DroppedRequest"}},
    },
    "shapes": {
        "KeptRequest": {
            "type": "structure",
            "members": {
                "Ids": {"shape": "IdList", "documentation": "kept out"},
                "documentation": {"shape": "Note"},  # a member of that name is a member, kept
            },
        },
        "IdList": {"type": "list", "member": {"shape": "Id"}},
        "Id": {"type": "string"},
        "Note": {"type": "map", "key": {"shape": "Id"}, "value": {"shape": "Count"}},
        "Count": {"type": "integer"},
        "DroppedRequest": {"type": "structure", "members": {"Other": {"shape": "Other"}}},
        "Other": {"type": "string"},
    },
}


def test_a_cut_model_keeps_the_operations_asked_and_every_shape_they_reach() -> None:
    found = cut(MODEL, ["Kept"])

    assert list(found["operations"]) == ["Kept"]
    assert set(found["shapes"]) == {"KeptRequest", "IdList", "Id", "Note", "Count"}
    assert found["shapes"]["KeptRequest"]["members"]["documentation"] == {"shape": "Note"}
    assert "kept out" not in json.dumps(found)


def test_the_bots_clients_built_from_the_cut_ec2_model_have_every_operation_granted_and_no_other(
    tmp_path: Path,
) -> None:
    [written] = write(tmp_path)
    core = botocore.session.Session()
    core.register_component("data_loader", botocore.loaders.create_loader(str(tmp_path)))
    ec2 = boto3.Session(botocore_session=core, region_name="eu-west-1").client("ec2")

    operation_names = set(ec2.meta.service_model.operation_names)
    assert operation_names == operations("ec2")
    assert not hasattr(ec2, "run_instances")
    assert written.stat().st_size < 100_000  # of EC2's 5 MB
    for name in operation_names:  # every shape each reaches resolves
        model = ec2.meta.service_model.operation_model(name)
        assert model.input_shape is not None
