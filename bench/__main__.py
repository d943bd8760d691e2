"""``python -m bench``: the benchmark table of docs/benchmarks.md. See bench/README.md."""

from bench.run import main

main()
