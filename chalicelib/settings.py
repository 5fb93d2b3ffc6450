"""Environment read once per container into a frozen object.

Every knob opsbots reads from the environment is named here, so the README, `.chalice/config.json`
and the code cannot drift apart, and so a handler never re-reads the environment per event.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from chalicelib.bots import FUNCTIONS

POLICIES_DIR = "OPSBOTS_POLICIES"
EXTERNAL_ID = "OPSBOTS_EXTERNAL_ID"
IDEMPOTENCY_TABLE = "OPSBOTS_IDEMPOTENCY_TABLE"
TRACING = "OPSBOTS_TRACING"
SERVICE_MODELS = "OPSBOTS_SERVICE_MODELS"  # botocore models cut to what the bots call (deploy/service_models.py)
# Those that name a bot's own resources (a table, a queue) are declared with its functions in the registry.
RESOURCE_VARIABLES = tuple(sorted({variable for function in FUNCTIONS.values() for variable in function.resources}))
VARIABLES = (POLICIES_DIR, EXTERNAL_ID, IDEMPOTENCY_TABLE, TRACING, SERVICE_MODELS, *RESOURCE_VARIABLES)
FUNCTION_MEMORY = "AWS_LAMBDA_FUNCTION_MEMORY_SIZE"  # set by Lambda: the function's memory in MB

# `vendor/policies` lands at the root of the deployment zip, beside app.py; in a checkout the
# same files sit in <repo>/policies. Both are one directory above chalicelib/.
SHIPPED_POLICIES = Path(__file__).resolve().parent.parent / "policies"
# `make package` writes the cut service models there, at the zip's root; a checkout has none (botocore's own load).
SHIPPED_MODELS = Path(__file__).resolve().parent.parent / "service_models"


@dataclass(frozen=True)
class Settings:
    policies_dir: Path
    external_id: str | None
    idempotency_table: str | None
    tracing: bool
    service_models: Path | None  # where the cut botocore models are, if anywhere
    function_memory_mb: int | None  # None off Lambda
    resources: Mapping[str, str]  # the bots' resources that are set: variable -> name (a table, a queue URL)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Settings:
        environ = os.environ if environ is None else environ
        return cls(
            policies_dir=Path(environ.get(POLICIES_DIR) or SHIPPED_POLICIES),
            external_id=environ.get(EXTERNAL_ID) or None,
            idempotency_table=environ.get(IDEMPOTENCY_TABLE) or None,
            tracing=environ.get(TRACING, "").lower() in {"1", "true", "yes"},
            service_models=_directory(Path(environ.get(SERVICE_MODELS) or SHIPPED_MODELS)),
            function_memory_mb=int(memory) if (memory := environ.get(FUNCTION_MEMORY, "")).isdigit() else None,
            resources={variable: value for variable in RESOURCE_VARIABLES if (value := environ.get(variable))},
        )

    def resource(self, variable: str) -> str | None:
        """The name of a bot's resource its function's environment gives (chalicelib/bots.py), or None."""
        return self.resources.get(variable)


def _directory(path: Path) -> Path | None:
    return path if path.is_dir() else None


class BotOffError(Exception):
    """A bot without its policy file is off: its functions answer so, cheaply, and do nothing.

    Here rather than with the policy models so that app.py can answer it without importing them.
    """

    def __init__(self, bot: str, file: str) -> None:
        self.bot, self.file = bot, file
        super().__init__(f"off: no {file}")

    def report(self) -> dict[str, str]:
        return {"status": "off", "bot": self.bot, "reason": f"no {self.file}"}
