"""Thumbnail bot: resized copies of every image uploaded under a configured bucket prefix.

Every thumbnail carries S3 metadata naming its source key and ETag. That metadata is the whole
state of the bot:
- ownership: an object at a thumbnail key without it was not written by opsbots and is never
  overwritten (a conflict, reported);
- idempotency: a duplicate event, or a re-upload of the same bytes, finds every thumbnail already
  made from that ETag and downloads nothing;
- no loops: an event for an object carrying it is ignored, as is any key under an output prefix.
Writes are conditional (`If-None-Match: *` for a new key, `If-Match` for one of ours), so two
deliveries racing each other cannot overwrite anything they did not look at; a refused write is
looked at and decided again, so when two uploads of one key race, the one S3 holds last wins. The
source is read with `If-Match` on the event's ETag: an event that arrives after a newer upload
changes nothing, because the newer upload's own event makes its thumbnails. Two uploads sharing
thumbnail names (`a.jpg`, `a.png`) are ordered by the time S3 stored them, kept in each thumbnail's
metadata: the later upload's thumbnails win whichever event arrives last.

Pillow is imported only by the render step (`chalicelib.thumbnails.imaging`), never by app.py.

Like every bot, one package: `policy.py` (what its file may say), `events.py` (its events, read into
frozen dataclasses), `decisions.py` (pure: plain data in, plain data out, no AWS), `executors.py`
(the only code that calls AWS, or prints what it would call for a dry run), `handlers.py` (each
Lambda function's work, with what it needs injected), `dry_run.py` (what `opsbots simulate` shows,
from the same decisions). docs/adding-a-bot.md describes the shape.
"""
