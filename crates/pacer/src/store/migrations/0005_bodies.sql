-- Request bodies in a table of their own. A request's row is rewritten on
-- every change of state (sent, finished, retried), and with its body inside
-- (a kilobyte or more) each change rewrote a page of bodies through the WAL
-- and again at the checkpoint. Bodies are written once, at import, and read
-- when sent; the rows that change are now a few dozen bytes each.
CREATE TABLE bodies (
    idx  INTEGER PRIMARY KEY,  -- the request
    body TEXT    NOT NULL
);
INSERT INTO bodies (idx, body) SELECT idx, body FROM requests;
ALTER TABLE requests DROP COLUMN body;
