"""Full screens: first-run setup, unlock, main, relays, help, article reader."""
