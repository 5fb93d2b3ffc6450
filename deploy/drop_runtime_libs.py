"""Remove boto3/botocore/s3transfer from a `chalice package` zip: the Lambda runtime provides them.

Powertools' `tracer` extra depends on aws-xray-sdk, which depends on botocore, so Chalice vendors
~17 MB that Lambda already has. Chalice has no exclude option; this rewrites the zip without them.
"""

from __future__ import annotations

import os
import sys
import zipfile

PROVIDED = ("boto3", "botocore", "s3transfer")


def ships(name: str) -> bool:
    top = name.split("/")[0]
    return top not in PROVIDED and not (top.endswith(".dist-info") and top.split("-")[0] in PROVIDED)


def main(path: str) -> None:
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(path + ".tmp", "w") as kept:
        for item in source.infolist():
            if ships(item.filename):
                kept.writestr(item, source.read(item))
    os.replace(path + ".tmp", path)


if __name__ == "__main__":
    main(sys.argv[1])
