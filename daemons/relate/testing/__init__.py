"""Test seams the suite and users share: a DNS server for loopback tests."""
