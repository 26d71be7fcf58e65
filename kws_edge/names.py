"""The one rule for every name that becomes part of an MQTT topic level.

Device ids, model names and keywords end up in topics (``kws_edge/<device_id>/...``,
``homeassistant/event/kws_edge_<device_id>/<model>/config``, ``hermes/hotword/<keyword>/detected``) and in
Home Assistant event types. A name is accepted when it is 1 to :data:`MAX_NAME` characters long, every
character is printable (no control characters, no NUL, no ESC, no line breaks), and it holds none of the
MQTT specials ``/``, ``+``, ``#``, ``$`` nor a space. Every loader (config, command line, manifests, the
board's KWS1 lines, the publisher itself) calls :func:`topic_name_problem` and raises its own error type.
"""

from __future__ import annotations

MAX_NAME = 64  # characters
FORBIDDEN = frozenset("/+#$ ")


def topic_name_problem(value: object) -> str | None:
    """Why ``value`` cannot be a topic level, or None when it can."""
    if not isinstance(value, str):
        return f"expected a string, got {type(value).__name__}"
    if not value:
        return "expected a non-empty name"
    if len(value) > MAX_NAME:
        return f"expected at most {MAX_NAME} characters, got {len(value)}"
    if not value.isprintable():
        return "expected printable characters only (no control characters)"
    bad = sorted(set(value) & FORBIDDEN)
    if bad:
        return f"expected no {' '.join(repr(c) for c in bad)} (MQTT topic separators, wildcards or space)"
    return None


def is_topic_name(value: object) -> bool:
    return topic_name_problem(value) is None
