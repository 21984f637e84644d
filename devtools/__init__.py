"""Helpers for the tests and benchmarks only (not installed with the product packages): process-tree watching,
a controller process on loopback."""
