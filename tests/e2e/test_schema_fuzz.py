"""A third-party schema fuzzer against the running stack through Envoy (SPEC §3/§4): schemathesis reads
the document Envoy serves at /api/v1/docs and drives every operation (coverage, fuzzing and stateful
phases, deterministic seed, a few examples each), authenticated as a freshly minted user. It must find no
5xx and no response that contradicts the document (status codes and bodies)."""

from __future__ import annotations

import subprocess
import uuid

from scripts.devtokens import mint
from tests.support.processes import ROOT
from tests.support.rest import ENVOY


def test_the_schema_fuzzer_finds_no_server_error_and_no_response_contradicting_the_document(grpc_target):
    result = subprocess.run(
        [
            str(ROOT / ".venv" / "bin" / "st"),
            "run",
            f"{ENVOY}/api/v1/docs",
            "--url",
            ENVOY,
            "-H",
            f"Authorization: Bearer {mint(str(uuid.uuid4()))}",
            "--checks",
            "not_a_server_error,response_schema_conformance,status_code_conformance",
            "--max-examples",
            "5",
            "--seed",
            "1",
            "--no-color",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "Selected: " in result.stdout and " passed" in result.stdout
