"""Desktop integration without Qt: single instance, and start at login per OS."""
