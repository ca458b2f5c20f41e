"""Schemathesis hooks for scripts/conformance.sh.

Names are generated with code points unassigned in Python's Unicode tables left out, for two reasons that
lie with the tools, not with the service or its document:
- schemathesis approximates `\\p{M}` with whole blocks for generation, and one of them (U+20D0-U+20FF) ends in
  unassigned code points, which it then sends as "schema-valid" although no Mark is there;
- the tools' Unicode tables are older than the service's, so a code point assigned since (a letter to the
  service, nothing to the validator) would be judged differently on the two sides.
Every assigned code point stays in play, in positive and negative data alike.

Names holding a high surrogate followed by a low one are left out too. The tools judge the two as two code
points (neither a letter), but JSON writes them as the escape pair "\\ud84b\\ude9c", which every JSON reader,
the service's among them, reads as the one character they encode (here U+22E9C, a CJK ideograph, a letter):
the value judged and the value sent differ. A lone surrogate stays in play: no reader can make a character of
it, and the service refuses it as malformed JSON.
"""

import unicodedata

import schemathesis

NAME_FIELDS = ("firstName", "lastName")


def _has_unassigned(value):
    return isinstance(value, str) and any(unicodedata.category(c) == "Cn" for c in value)


def _has_surrogate_pair(value):
    return isinstance(value, str) and any(
        "\ud800" <= high <= "\udbff" and "\udc00" <= low <= "\udfff"
        for high, low in zip(value, value[1:])
    )


@schemathesis.hook
def filter_body(context, body):
    if not isinstance(body, dict):
        return True
    return not any(
        _has_unassigned(body.get(field)) or _has_surrogate_pair(body.get(field))
        for field in NAME_FIELDS
    )
