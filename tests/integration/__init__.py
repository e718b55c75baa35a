"""Tests against real S3 servers on 127.0.0.1 (moto, SeaweedFS), started by the fixtures in
``conftest.py`` here."""
