"""Widgets of the main screen: sidebar, message view, composer."""
