"""SimBridge benchmark: a load generator, a bare relay baseline and a runner.

`python -m bench.run <scenario>` starts the servers it measures on 127.0.0.1, sets them up
through their APIs, drives the load and prints one JSON line. See bench/README.md.
"""
