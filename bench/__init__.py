"""Diswoot benchmark: the real daemon (a child process) against the in-process fakes.

``python -m bench`` (or ``make bench``) prints a readable table and one JSON line; see
``python -m bench --help`` and the README's performance section.
"""
