"""MLS (RFC 9420): cipher suites and the group protocol built on them."""
