"""``python -m relatectl``."""

from relatectl.main import main

main()
