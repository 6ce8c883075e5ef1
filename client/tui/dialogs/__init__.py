"""Modal dialogs: invite, accept, verify, members, prompts, articles, files."""
