"""Backends: the domain model, the backend contract and its adapters (simulator, libvirt)."""
