"""Chat-format documents: real dialog turns written in the ChatML-style template of the demo.

    <|im_start|>user
    ...<|im_end|>
    <|im_start|>assistant
    ...<|im_end|>

One document holds one conversation; turns alternate user/assistant, start with the user and end
with the assistant.
"""

from __future__ import annotations

import html
import re
from typing import List, Optional, Sequence, Tuple

from .clean import fix_quotes, normalize_whitespace, remove_special_tokens

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
ROLES = ("user", "assistant")

Turn = Tuple[str, str]  # (role, text)


def clean_turn(text: str, unwrap: bool = True) -> str:
    """Whitespace-normalised turn text with entities decoded, old-style quotes fixed and any
    reserved token strings removed."""
    text = remove_special_tokens(fix_quotes(html.unescape(text)))
    return normalize_whitespace(text, unwrap=unwrap)


def alternate(lines: Sequence[str]) -> List[Turn]:
    """Consecutive utterances of a two-party conversation -> user/assistant turns.

    The first speaker is the user. Empty utterances end the usable part (the alternation would
    break); a trailing unanswered user turn is dropped."""
    turns: List[Turn] = []
    for i, line in enumerate(lines):
        text = clean_turn(str(line))
        if not text:
            break
        turns.append((ROLES[i % 2], text))
    if turns and turns[-1][0] == "user":
        turns.pop()
    return turns


def format_chat(turns: Sequence[Turn]) -> Optional[str]:
    """The chat document for ``turns``, or None when they are not a valid conversation."""
    if not turns or turns[0][0] != "user" or turns[-1][0] != "assistant":
        return None
    parts = []
    for i, (role, text) in enumerate(turns):
        if role != ROLES[i % 2] or not text.strip():
            return None
        parts.append(f"{IM_START}{role}\n{text.strip()}{IM_END}\n")
    return "".join(parts)


_TURN_RE = re.compile(re.escape(IM_START) + r"(user|assistant)\n(.*?)" + re.escape(IM_END) + r"\n",
                      re.S)


def parse_chat(doc: str) -> List[Turn]:
    """Inverse of :func:`format_chat` (used by the checks and tests)."""
    turns = [(m.group(1), m.group(2)) for m in _TURN_RE.finditer(doc)]
    if format_chat(turns) != doc:
        raise ValueError("not a well-formed chat document")
    return turns

