"""The SMTP daemon: MX for hosted domains and authenticated submission."""
