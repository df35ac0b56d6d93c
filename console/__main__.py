"""`python -m console` runs the hvc command line."""

from console.cli import main

main()
