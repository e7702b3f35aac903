"""The one exception a received mask payload raises, shared by the codec (``pemn_fl.codec``) and
its delta body (``pemn_fl.rice``) so neither imports the other upward."""

from __future__ import annotations


class MaskPayloadError(ValueError):
    """Any invalid payload.

    Deliberately a single exception type so that the receiver can catch exactly "this payload is
    bad" (drop the update, log, carry on) without also swallowing its own programming errors,
    which surface as plain ``ValueError``/``TypeError``.  The message says what was wrong.
    """
