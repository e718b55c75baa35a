"""Tests that need no S3 server."""
