"""The lowest layer: what a task *is* (its record, name, locks) and where it is kept (the store).

Nothing here knows about Celery, Channels or HTTP; every other layer builds on it.
"""
