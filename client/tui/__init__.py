"""The terminal chat app (Textual): ``samizdat`` without a subcommand.

It drives :class:`client.engine.Engine` only and holds no protocol logic.
Layout follows posting/frogmouth: ``screens/`` (full screens), ``widgets/``
(parts of the main screen), ``dialogs/`` (modal screens), one ``app.tcss``.
"""
