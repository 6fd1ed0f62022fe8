"""Server messages in the panel's words: `remove_background=never` -> `Remove background: Never`.

Pure Python (no bpy): the labels come from the settings' RNA (properties.option_words).
"""

from __future__ import annotations

import re

Words = dict[str, tuple[str, dict[str, str]]]  # option -> (its label, {value: value's label})


def in_panel_words(message: str, words: Words) -> str:
    """Replace the API's option names (and `name=value` pairs) with what the panel shows."""
    for name, (label, values) in words.items():
        for value, value_label in values.items():
            message = re.sub(rf"\b{re.escape(name)}={re.escape(value)}\b", f"{label}: {value_label}", message)
        message = re.sub(rf"\b{re.escape(name)}\b", label, message)
    return message
