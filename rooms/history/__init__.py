"""A room's past, for people: its text at any version or time, who wrote each character and who
last touched each line, diffs between versions, and restoring an old version as a new change.

- authorship.py: who inserted each code point and the last change of each line, kept as changes
  are applied (pure; rooms/live.py keeps one per live room, rooms/store.py persists it).
- past.py: reading the past from the database: the copies of the text every SNAPSHOT_EVERY
  changes (rooms/models.py Snapshot) and the op log after them.
- authors.py: the display name each author last edited a room under.
- blame.py, diff.py: blame and diffs as the API shows them.
- answers.py: what each history request answers, on REST and the WebSocket alike.
- views.py: the REST endpoints (restore included; the restore itself is rooms/document.py's).

What clients see is described in docs/protocol.md, "History".
"""
