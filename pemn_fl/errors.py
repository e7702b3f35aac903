"""Exceptions that modules on different floors raise alike, here so that none imports another
upward: the one a received mask payload raises, shared by the codec (``pemn_fl.codec``, its
frame ``pemn_fl.maskheader``) and its delta body (``pemn_fl.rice``); and the one every data
problem raises, shared by ``pemn_fl.data`` and the file readers of ``pemn_fl.datafiles``."""

from __future__ import annotations


class MaskPayloadError(ValueError):
    """Any invalid payload.

    Deliberately a single exception type so that the receiver can catch exactly "this payload is
    bad" (drop the update, log, carry on) without also swallowing its own programming errors,
    which surface as plain ``ValueError``/``TypeError``.  The message says what was wrong.
    """


class DataError(ValueError):
    """Clear, user-facing data problem: names the exact file looked for and how to get it.

    Subclasses :class:`ValueError` so generic CLI error handling (``except ValueError``) that
    reports bad user input also reports bad data, without printing a traceback.
    """
