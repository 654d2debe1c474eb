-- The IMAP ENVELOPE (RFC 9051 §7.5.2) of each message as FETCH sends it, rendered once at
-- ingest (relate.imap.responses.envelope), so that FETCH ENVELOPE copies bytes instead of
-- decoding and rendering the jsonb envelope for every message it lists.
--   envelope_wire       the form for sessions without UTF-8 (8-bit strings as literals)
--   envelope_wire_utf8  the form once UTF8=ACCEPT is enabled (RFC 9051 §6.3.1, RFC 6855),
--                       NULL when it equals envelope_wire (every envelope without 8-bit text)
-- A row with a NULL envelope_wire is rendered from the jsonb envelope, as before.
ALTER TABLE messages ADD COLUMN IF NOT EXISTS envelope_wire bytea,
                     ADD COLUMN IF NOT EXISTS envelope_wire_utf8 bytea;

-- Backfill of the rows stored before this migration: the same rendering in SQL.
-- nstring: NIL, a quoted string (printable or 8-bit under UTF-8, at most 1000 octets, no CR
-- or LF, with \ and " escaped), else a literal {n} CRLF octets. jsonb text holds no NUL.
CREATE OR REPLACE FUNCTION pg_temp.relate_nstring(v text, utf8 boolean) RETURNS bytea
LANGUAGE sql IMMUTABLE AS $fn$
  SELECT CASE
    WHEN v IS NULL THEN convert_to('NIL', 'UTF8')
    WHEN octet_length(convert_to(v, 'UTF8')) <= 1000
         AND strpos(v, E'\r') = 0 AND strpos(v, E'\n') = 0
         AND (utf8 OR octet_length(convert_to(v, 'UTF8')) = char_length(v))
      THEN convert_to('"' || replace(replace(v, E'\\', E'\\\\'), '"', E'\\"') || '"', 'UTF8')
    ELSE convert_to('{' || octet_length(convert_to(v, 'UTF8')) || E'}\r\n' || v, 'UTF8')
  END
$fn$;

CREATE OR REPLACE FUNCTION pg_temp.relate_addresses(a jsonb, utf8 boolean) RETURNS bytea
LANGUAGE sql IMMUTABLE AS $fn$
  SELECT CASE
    WHEN a IS NULL OR jsonb_typeof(a) <> 'array' OR jsonb_array_length(a) = 0 THEN convert_to('NIL', 'UTF8')
    ELSE convert_to('(', 'UTF8') || (
      SELECT string_agg(
               convert_to('(', 'UTF8')
               || pg_temp.relate_nstring(e ->> 0, utf8) || convert_to(' ', 'UTF8')
               || pg_temp.relate_nstring(e ->> 1, utf8) || convert_to(' ', 'UTF8')
               || pg_temp.relate_nstring(e ->> 2, utf8) || convert_to(' ', 'UTF8')
               || pg_temp.relate_nstring(e ->> 3, utf8) || convert_to(')', 'UTF8'),
               ''::bytea ORDER BY i)
        FROM jsonb_array_elements(a) WITH ORDINALITY AS t(e, i)
    ) || convert_to(')', 'UTF8')
  END
$fn$;

CREATE OR REPLACE FUNCTION pg_temp.relate_envelope(env jsonb, utf8 boolean) RETURNS bytea
LANGUAGE sql IMMUTABLE AS $fn$
  SELECT convert_to('(', 'UTF8')
      || pg_temp.relate_nstring(env ->> 'date', utf8) || convert_to(' ', 'UTF8')
      || pg_temp.relate_nstring(env ->> 'subject', utf8) || convert_to(' ', 'UTF8')
      || pg_temp.relate_addresses(env -> 'from', utf8) || convert_to(' ', 'UTF8')
      || pg_temp.relate_addresses(env -> 'sender', utf8) || convert_to(' ', 'UTF8')
      || pg_temp.relate_addresses(env -> 'reply_to', utf8) || convert_to(' ', 'UTF8')
      || pg_temp.relate_addresses(env -> 'to', utf8) || convert_to(' ', 'UTF8')
      || pg_temp.relate_addresses(env -> 'cc', utf8) || convert_to(' ', 'UTF8')
      || pg_temp.relate_addresses(env -> 'bcc', utf8) || convert_to(' ', 'UTF8')
      || pg_temp.relate_nstring(env ->> 'in_reply_to', utf8) || convert_to(' ', 'UTF8')
      || pg_temp.relate_nstring(env ->> 'message_id', utf8) || convert_to(')', 'UTF8')
$fn$;

UPDATE messages SET envelope_wire = pg_temp.relate_envelope(envelope, false) WHERE envelope_wire IS NULL;
-- The UTF-8 form differs only where the other one carries 8-bit text (in a literal).
UPDATE messages m SET envelope_wire_utf8 = u.wire
  FROM (SELECT id, pg_temp.relate_envelope(envelope, true) AS wire FROM messages
         WHERE envelope_wire_utf8 IS NULL) AS u
 WHERE m.id = u.id AND u.wire <> m.envelope_wire;

DROP FUNCTION pg_temp.relate_envelope(jsonb, boolean);
DROP FUNCTION pg_temp.relate_addresses(jsonb, boolean);
DROP FUNCTION pg_temp.relate_nstring(text, boolean);
