"""`python -m console` runs the hvc command line (as the `hvc` script does)."""

from console.start import main

main()
