"""Spam filtering with rspamd: the HTTP client (rspamd.py), the verdict at the end of DATA with the users'
sender lists (filter.py), and learning from moves into and out of Junk (learner.py)."""
