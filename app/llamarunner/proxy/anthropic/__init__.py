"""Anthropic's Messages API (/v1/messages) on both ports: error shape, stream, routes.

Nothing is imported here: proxy/errors.py needs `anthropic.errors` while the routes need
proxy/errors.py (through the relay), so each module is imported by its own name.
"""
