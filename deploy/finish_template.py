"""`python -m deploy.finish_template sam.json`: the template `chalice package` wrote, made ready to deploy.

Each function gets what the registry says it runs with (deploy/wire_functions.py), then every IAM
statement's tables, queues and SES identities are pinned to the stack's own account and region
(deploy/scope_to_stack.py).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from deploy.scope_to_stack import scope_template
from deploy.wire_functions import wire


def main(path: str) -> None:
    template_path = Path(path)
    template = json.loads(template_path.read_text())
    template_path.write_text(json.dumps(scope_template(wire(template)), indent=2) + "\n")


if __name__ == "__main__":
    main(sys.argv[1])
