"""The hvc console: command line, Textual app, jobs and headless mode."""
