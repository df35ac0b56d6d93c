"""S1 verbs on the command line: detach, attach, images — NDJSON, confirmation, refusals."""

from __future__ import annotations

import json

import pytest

from tests.unit.test_cli import run


def test_detach_finds_the_owner_and_streams_ndjson_ending_with_the_result() -> None:
    result = run("detach", "0000:17:00.0", "--host", "fra-gpu01", "--yes", "--json", "--speed", "0")
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert events[0]["job"]["kind"] == "detach" and "ml-train-01" in events[0]["job"]["targets"]
    assert [e["phase"] for e in events if e["event"] == "phase"] == ["capturing", "detaching", "releasing"]
    assert events[-1]["outcome"] == "succeeded" and "backed by an image" in events[-1]["reason"]


def test_images_lists_the_demo_vm_backed_by_an_image() -> None:
    result = run("images", "--json")
    assert result.returncode == 0, result.stderr
    (image,) = json.loads(result.stdout)["images"]
    assert (image["vm"], image["source_host"], image["source_address"]) == ("hpc-solver-01", "fra-gpu01",
                                                                            "0000:e3:00.0")
    assert image["matching_hardware"] == [] and image["register_bytes"] == 256
    assert "backed by image" in run("images").stdout


@pytest.mark.parametrize(("args", "message"), [
    (("detach", "0000:17:00.0", "--host", "fra-gpu01"), "needs confirmation; pass --yes"),
    (("detach", "0000:e3:00.0", "--host", "fra-gpu01", "--yes"), "is not assigned to a VM"),
    (("detach", "0000:18:00.0", "--yes"), "exists on"),
    (("detach", "0000:17:00.0", "--host", "fra-gpu01", "--yes", "--read-only"), "read-only"),
    (("attach", "hpc-solver-01", "--device", "0000:41:00.0"), "vendor differs"),
    (("attach", "web-01", "--device", "0000:3b:00.0"), "web-01 has no device images"),
])
def test_refusals_exit_2_with_one_line(args: tuple[str, ...], message: str) -> None:
    result = run(*args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr and result.stderr.count("\n") == 1 and result.stdout == ""
