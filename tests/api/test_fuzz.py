"""Property-based run of schemathesis over /openapi.json against a real relay process.

``make test`` runs it (once per store engine) for ``RELAY_FUZZ_SECONDS`` (default 25) of
generation: schemathesis's ``--max-time`` spends that budget across its phases and stops.
"""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from relay.api.routes import endpoints
from tests.proc import RelayProcess, free_port, relay_env

TOKEN = "fuzz-" + "f" * 40
SECONDS = int(os.environ.get("RELAY_FUZZ_SECONDS", "25"))
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
@pytest.mark.timeout(SECONDS + 180)
def test_schemathesis_finds_no_server_error(tmp_path: Path, store_url: str) -> None:
    """Generated requests to every route never produce a 5xx or a response the document does
    not describe."""
    port = free_port()
    extra = {"RELAY_API_TOKEN": TOKEN, "RELAY_LOG_LEVEL": "error", "RELAY_WEBHOOKS_TIMEOUT": "2"}
    # An event stream ends after a second (it would otherwise hold its case for ever).
    extra["RELAY_STREAM_MAX_DURATION"] = "1"
    extra["RELAY_STORE_URL"] = store_url
    relay = RelayProcess(tmp_path, port, relay_env(tmp_path, port, extra))
    junit = tmp_path / "junit.xml"
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
                "--max-time",
                str(SECONDS),
                "--seed",
                "20261124",
                "--suppress-health-check",
                "all",
                "--report",
                "junit",
                "--report-junit-path",
                str(junit),
            ],
            capture_output=True,
            timeout=SECONDS + 120,
            check=False,
            cwd=tmp_path,
        )
    finally:
        relay.stop()
    report = done.stdout.decode(errors="replace")
    assert done.returncode == 0, report[-6000:] + relay.output()[-3000:]
    # Every route the relay serves (the document describes them all: test_service) was
    # exercised, the Graph notification endpoints included.
    cases = ET.parse(junit).iter("testcase")  # noqa: S314 (the report schemathesis just wrote)
    tested = {case.get("name") for case in cases}
    # schemathesis leaves out the document's own route; it fetched it to start.
    served = {f"{ep.method} {ep.path}" for ep in endpoints()} - {"GET /openapi.json"}
    assert "POST /graph/notify" in served
    assert served <= tested, sorted(served - tested)
