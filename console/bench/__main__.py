"""``python -m console.bench [--size smoke|full] [--json]``."""

from console.bench.suite import main

main()
