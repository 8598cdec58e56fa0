"""Errors a user can cause, and the wording that helps them fix it."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """A mistake in the user's input: shown as one sentence, exit code 2, never a traceback."""


def close_matches(name: str, known: Iterable[str], limit: int = 3) -> list[str]:
    """Known names that look like ``name`` (typos, wrong case, missing prefix)."""
    known = list(known)
    by_lower = {k.lower(): k for k in known}
    matches = difflib.get_close_matches(name.lower(), list(by_lower), n=limit, cutoff=0.6)
    # Common slips: a name without its namespace ("fonts" for "embedded.fonts") or cut short.
    suffix_hits = [k for k in known if k.split(".")[-1].lower() == name.lower().split(".")[-1]]
    prefix_hits = sorted((k for k in known if k.lower().startswith(name.lower())), key=len)
    ordered = [*suffix_hits, *prefix_hits[:limit], *(by_lower[m] for m in matches)]
    return list(dict.fromkeys(ordered))[:limit]


def unknown_name(kind: str, name: str, known: Iterable[str], show_known: int = 12) -> UserError:
    """The error for an unknown name: what was asked, close matches, and what exists."""
    known = sorted(known)
    message = f"unknown {kind} {name!r}"
    matches = close_matches(name, known)
    if matches:
        message += f"; did you mean {' or '.join(repr(m) for m in matches)}?"
    if not known:
        message += f"; no {kind}s are registered (is a plugin missing or disabled?)"
    else:
        listed = ", ".join(known[:show_known])
        more = f" and {len(known) - show_known} more" if len(known) > show_known else ""
        message += f" (known: {listed}{more})"
    return UserError(message)
