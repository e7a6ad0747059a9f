"""Reliability tests: crashes, database faults, racing workers and bad input, on real Postgres."""
