"""Test helpers shared by the test suite, the benchmarks and the demo: real S3 endpoints on
127.0.0.1 and clients isolated from the developer's AWS and ZenML setup.

* :mod:`tests.support.env` -- an environment that cannot reach real AWS (apply it before
  any client is created); loopback and proxy settings.
* :mod:`tests.support.clients` -- boto3 clients, bucket creation, s3fs options.
* :mod:`tests.support.moto` -- :class:`~tests.support.moto.MotoServer`, moto in a thread
  of this process, with server-side request recording (:mod:`tests.support.requests`).
* :mod:`tests.support.seaweed` -- :class:`~tests.support.seaweed.SeaweedServer`,
  SeaweedFS as a subprocess.
* :mod:`tests.support.ports` -- free loopback ports.
* :mod:`tests.support.zenml` -- an isolated ZenML environment and stack components built
  without a ZenML database.

Nothing here contacts anything but 127.0.0.1: both servers bind loopback only, our own
HTTP calls bypass proxies, and SeaweedFS telemetry is switched off. This package imports
nothing: each module is imported on its own, so a test that needs no server never imports
moto or SeaweedFS.
"""
