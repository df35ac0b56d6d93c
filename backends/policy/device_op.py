"""What every backend's device operation shares: find the device, ask the authority, refuse denials.

A denial is refused in ``prepare`` (nothing runs; the refusal is audited with the policy's
reason); a translation runs the local operation and its job says what was asked and what ran.
"""

from __future__ import annotations

from pathlib import Path

from backends.base import find_device, new_job
from backends.errors import BadInput
from backends.models import Inventory, Job, JobKind, PciDevice
from backends.policy.authority import Decision, Verdict, load_authority
from backends.requests import DeviceOpRequest


class PolicyDenied(BadInput):
    """The device policy authority denied the operation; nothing was done."""

    title = "denied by policy"




def decide(inv: Inventory, request: DeviceOpRequest, policy_dir: Path | None) -> tuple[PciDevice, Decision]:
    """The device and the authority's decision; a denial raises PolicyDenied naming device, host and reason."""
    device = find_device(inv, request.device, request.host)
    decision = load_authority(policy_dir).decide(device, request.op.strip().lower())
    if decision.verdict is Verdict.DENY:
        raise PolicyDenied(f"{decision.op} on {device.address} ({device.host}): {decision.summary()}",
                           hint="the device policy allows only local operations; see `hvc device-policy "
                                f"{device.address} --host {device.host}`")
    return device, decision


def device_op_job(device: PciDevice, decision: Decision) -> Job:
    """The job for a permitted or translated operation; its description is the audited decision."""
    run = decision.run or decision.op
    return new_job(JobKind.DEVICE_OP, (f"{device.host}/{device.address}", *([device.owner.vm] if device.owner.vm
                                                                           else [])),
                   (run,), f"{decision.op} {device.address} on {device.host}: {decision.summary()}")


def is_translated(decision: Decision) -> bool:
    return decision.verdict is Verdict.TRANSLATE
