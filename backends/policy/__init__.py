"""S7: the device policy authority: which device operations are local, which are system-wide."""

from backends.policy.authority import OPS, Authority, Decision, Policy, Verdict, load_authority, parse_policy

__all__ = ["OPS", "Authority", "Decision", "Policy", "Verdict", "load_authority", "parse_policy"]
