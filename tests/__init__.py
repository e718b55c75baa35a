"""The test suite: ``unit/`` needs no server, ``integration/`` runs against moto and SeaweedFS
on 127.0.0.1; ``support/`` holds the helpers shared with the benchmarks and the demo."""
