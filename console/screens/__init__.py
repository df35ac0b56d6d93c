"""The console's screens, one per view."""
