"""The Samizdat client: the asyncio engine that every front end drives (the
Textual app, the ``samizdat`` CLI, the harness), together with what it keeps on
the device -- identity keys, contacts, MLS group states, history and
attachments -- in a passphrase-encrypted local store (:mod:`client.store`).
client/ builds on protocol/ and never imports relay/.
"""
