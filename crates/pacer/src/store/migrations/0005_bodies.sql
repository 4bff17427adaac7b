-- Request bodies out of the requests table. A request's row is rewritten on
-- every change of state (sent, finished, retried), and with its body inside
-- (a kilobyte or more) each change rewrote a page of bodies through the WAL
-- and again at the checkpoint.
--
-- A body that is the input file's own bytes (a Batch JSONL line's `body`,
-- sent as written) is not copied at all: the row says where it is in the
-- input (meta 'input_path', checked against the job's fingerprint at every
-- start) and a hash of it, checked when it is read. Other bodies (made from
-- prompts or documents) are kept here as text.
CREATE TABLE bodies (
    idx  INTEGER PRIMARY KEY,  -- the request
    body TEXT,                 -- the body, when the input does not hold it as sent
    at   INTEGER,              -- else: the byte where it starts in the input
    len  INTEGER,              -- its length in bytes
    hash INTEGER,              -- the first 8 bytes of its blake3, little-endian
    CHECK (body IS NOT NULL OR (at IS NOT NULL AND len IS NOT NULL AND hash IS NOT NULL))
);
INSERT INTO bodies (idx, body) SELECT idx, body FROM requests;
ALTER TABLE requests DROP COLUMN body;
