"""Property-based run of schemathesis over /openapi.json against a real relay process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.proc import RelayProcess, free_port, relay_env

TOKEN = "fuzz-" + "f" * 40
CHECKS = ",".join(
    (
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
        "unsupported_method",
        "allow_header_conformance",
    )
)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_schemathesis_finds_no_server_error(tmp_path: Path, store_url: str) -> None:
    """Generated requests never produce a 5xx or a response the document does not describe."""
    port = free_port()
    extra = {"RELAY_API_TOKEN": TOKEN, "RELAY_LOG_LEVEL": "error", "RELAY_WEBHOOKS_TIMEOUT": "2"}
    extra["RELAY_STORE_URL"] = store_url
    relay = RelayProcess(tmp_path, port, relay_env(tmp_path, port, extra))
    relay.start()
    try:
        done = subprocess.run(
            [
                str(Path(sys.executable).with_name("schemathesis")),
                "run",
                f"{relay.url}/openapi.json",
                "-H",
                f"Authorization: Bearer {TOKEN}",
                "--checks",
                CHECKS,
                "--max-examples",
                os.environ.get("RELAY_FUZZ_EXAMPLES", "40"),
                "--seed",
                "20261124",
                "--suppress-health-check",
                "all",
            ],
            capture_output=True,
            timeout=600,
            check=False,
            cwd=tmp_path,
        )
    finally:
        relay.stop()
    report = done.stdout.decode(errors="replace")
    assert done.returncode == 0, report[-6000:] + relay.output()[-3000:]
