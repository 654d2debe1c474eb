-- The keywords of a mailbox (RFC 9051 §2.3.2: flags other than the five system flags), sorted, so that
-- SELECT reads FLAGS from the mailbox row instead of collecting the flags of every message (12-15 ms of
-- PostgreSQL CPU on a 10,000-message mailbox). A keyword stays listed once set on any message of the
-- mailbox, as Dovecot keeps them, so the list only grows. Kept, like message_count, by the statements
-- that already write the mailbox row when messages arrive or their flags change (ingest and APPEND,
-- COPY and MOVE, STORE): no extra statement, no extra row lock.
ALTER TABLE mailboxes ADD COLUMN keywords text[] NOT NULL DEFAULT '{}';

-- ``have`` with the keywords among ``flags`` added, sorted; ``have`` itself (no new array) when it holds
-- them all already, the usual case.
CREATE FUNCTION relate_add_keywords(have text[], flags text[]) RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN flags <@ (have || ARRAY['\Answered', '\Flagged', '\Deleted', '\Seen', '\Draft']) THEN have
        ELSE ARRAY(SELECT DISTINCT f FROM unnest(have || flags) AS f
                    WHERE f <> ALL (ARRAY['\Answered', '\Flagged', '\Deleted', '\Seen', '\Draft']) ORDER BY f)
    END
$$;

UPDATE mailboxes b SET keywords = k.keywords
  FROM (SELECT d.mailbox_id, relate_add_keywords('{}', array_agg(DISTINCT f)) AS keywords
          FROM (SELECT DISTINCT mailbox_id, flags FROM messages) AS d, unnest(d.flags) AS f
         GROUP BY d.mailbox_id) AS k
 WHERE k.mailbox_id = b.id AND k.keywords <> '{}';
