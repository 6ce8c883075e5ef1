"""Samizdat's protocol test harness: MLS conformance vectors and, later, the
malicious relay, scenarios and relay conformance."""
