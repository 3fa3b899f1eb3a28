"""WhatsApp's documented limits, counted in characters (Python code points).

The one copy of each: menu definitions are checked against them, and texts filled in at
send time are kept within them.
"""

from __future__ import annotations

from datetime import timedelta

TEXT = 4096
"""A text message."""
BODY = 1024
"""An interactive message's body text."""
HEADER = 60
FOOTER = 60
MAX_BUTTONS = 3
BUTTON_TITLE = 20
BUTTON_ID = 256
LIST_BUTTON = 20
"""The text of the button that opens a list."""
MAX_SECTIONS = 10
MAX_ROWS = 10
"""Rows across all sections of a list, not per section."""
SECTION_TITLE = 24
ROW_TITLE = 24
ROW_DESCRIPTION = 72
ROW_ID = 200
CUSTOMER_SERVICE_WINDOW = timedelta(hours=24)
"""Free-form text only this long after the customer's last message; after it, a template."""
