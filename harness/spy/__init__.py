"""The spy-relay audit (issue 15 item 8, SPEC.md §7.1.1 and §10.8).

A *compelled relay* keeps everything its process sees: connections (peer
address, open and close times), which mailboxes each connection reads,
creates, acks and posts to, message ids, sizes, times, and blob chunk
hashes.  ``harness.spy.relay`` runs the real relay with that logging
bolted on from outside (the production relay has no such mode);
``harness.spy.analysis`` computes what such logs let an operator infer and
classes each finding as admitted by SPEC.md §2/§7.1 or a violation;
``harness.spy.scenario`` drives a known group over two spy relays so the
inferences can be checked against ground truth.
"""
