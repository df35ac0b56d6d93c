"""The embedded simulated datacenter."""
