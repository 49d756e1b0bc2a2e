"""What users do with the suggestions they are shown, per language, counted on this machine only (nothing is sent
anywhere): accepted whole (the editor ran the item's `hone.accepted` command: Tab in VS Code), typed through to its
end, partly taken (typed or accepted word by word, then left), or dismissed (typed over, or left untouched).

A suggestion is settled when the next one is shown in its document, or the document closes; the one still showing
counts as shown only. `hone/stats` reports the counts and the rates."""

from __future__ import annotations

from collections import Counter, OrderedDict
from dataclasses import dataclass

ACCEPT_COMMAND = "hone.accepted"  # run by the editor when a suggestion is accepted; its argument: the suggestion's id
PENDING_DOCS = 256  # documents whose latest suggestion is still open (the oldest is settled beyond this)
OUTCOMES = ("accepted", "typed", "partial", "dismissed")


@dataclass
class _Shown:
    id: int
    language: str
    text: str
    taken: int = 0  # characters of it typed or accepted so far


class Acceptance:
    def __init__(self, max_docs: int = PENDING_DOCS) -> None:
        self.max_docs = max_docs
        self._languages: dict[str, str] = {}
        self._open: OrderedDict[str, _Shown] = OrderedDict()  # uri -> its latest suggestion, not settled yet
        self._counts: dict[str, Counter[str]] = {}
        self._next_id = 1

    def language(self, uri: str, language_id: str) -> None:
        self._languages[uri] = language_id or "unknown"

    def shown(self, uri: str, text: str) -> int:
        """A new suggestion shown in `uri` (the one before it there is settled) -> its id."""
        self._settle(uri)
        s = _Shown(self._next_id, self._languages.get(uri, "unknown"), text)
        self._next_id += 1
        self._open[uri] = s
        self._count(s.language, "shown")
        while len(self._open) > self.max_docs:
            self._settle(next(iter(self._open)))
        return s.id

    def typed(self, uri: str, rest: str) -> int | None:
        """The user typed (or accepted word by word) the start of the suggestion showing in `uri`; `rest` is what is
        left of it -> its id (the rest is the same suggestion), None when none is showing there."""
        s = self._open.get(uri)
        if s is None or not s.text.endswith(rest):
            return None
        s.taken = max(s.taken, len(s.text) - len(rest))
        return s.id

    def accepted(self, suggestion_id: int) -> bool:
        """The editor accepted suggestion `suggestion_id` whole (what was left of it); False for an unknown id."""
        for uri, s in self._open.items():
            if s.id == suggestion_id:
                del self._open[uri]
                self._count(s.language, "accepted")
                return True
        return False

    def closed(self, uri: str) -> None:
        self._settle(uri)
        self._languages.pop(uri, None)

    def _settle(self, uri: str) -> None:
        s = self._open.pop(uri, None)
        if s is None:
            return
        if s.taken >= len(s.text.rstrip()):
            self._count(s.language, "typed")
        else:
            self._count(s.language, "partial" if s.taken else "dismissed")

    def _count(self, language: str, what: str) -> None:
        self._counts.setdefault(language, Counter())[what] += 1

    def stats(self) -> dict:
        """Per language: shown, each outcome, showing (not settled yet) and the rates over settled suggestions."""
        showing = Counter(s.language for s in self._open.values())
        out = {}
        for language, c in sorted(self._counts.items()):
            settled = sum(c[o] for o in OUTCOMES)
            out[language] = {"shown": c["shown"], **{o: c[o] for o in OUTCOMES}, "showing": showing[language],
                             "acceptedRate": round((c["accepted"] + c["typed"]) / settled, 4) if settled else None,
                             "partialRate": round(c["partial"] / settled, 4) if settled else None}
        return out
