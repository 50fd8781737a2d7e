"""Desktop integration without Qt: single instance now, autostart per OS later."""
