"""Tests of the code that runs inside workload pods, on the tiny model."""
