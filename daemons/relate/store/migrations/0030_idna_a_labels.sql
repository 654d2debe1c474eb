-- Hosted domains as IDNA A-labels (relate.mail.address): a domain typed as U-labels (münchen.de) was
-- stored as typed until now, and its A-label form (xn--mnchen-3ya.de), which DNS and most senders use,
-- was then unknown. This converts the rows that need it, in SQL, since the runner runs SQL only:
-- each non-ASCII label becomes 'xn--' || Punycode (RFC 3492) of its NFC form. The rows were lower-cased
-- when stored; IDNA2008's further mappings (UTS #46) change nothing a domain could hold then but
-- compatibility characters, which Python's idna refuses on lookup, so such a row stays reachable only
-- through its A-label (as relatectl lists it). ASCII rows, nearly all of them, are not touched.
-- Two rows that are one domain (münchen.de and xn--mnchen-3ya.de both hosted) stop the migration with
-- their names: which to keep is the admin's choice, not ours.

CREATE FUNCTION relate_0030_punycode(input text) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT AS $$
DECLARE
    cps int[] := '{}';
    output text := '';
    n int := 128;       -- initial_n
    bias int := 72;     -- initial_bias
    delta bigint := 0;
    b int;
    h int;
    m int;
    q bigint;
    k int;
    t int;
    d bigint;
    c int;
BEGIN
    FOR i IN 1 .. length(input) LOOP
        cps := cps || ascii(substr(input, i, 1));
    END LOOP;
    FOREACH c IN ARRAY cps LOOP
        IF c < 128 THEN
            output := output || chr(c);
        END IF;
    END LOOP;
    b := length(output);
    h := b;
    IF b > 0 THEN
        output := output || '-';
    END IF;
    WHILE h < cardinality(cps) LOOP
        SELECT min(x) INTO m FROM unnest(cps) AS x WHERE x >= n;
        delta := delta + (m - n)::bigint * (h + 1);
        n := m;
        FOREACH c IN ARRAY cps LOOP
            IF c < n THEN
                delta := delta + 1;
            ELSIF c = n THEN
                q := delta;
                k := 36;  -- base
                LOOP
                    t := CASE WHEN k <= bias THEN 1 WHEN k >= bias + 26 THEN 26 ELSE k - bias END;  -- tmin, tmax
                    EXIT WHEN q < t;
                    d := t + (q - t) % (36 - t);
                    output := output || chr((CASE WHEN d < 26 THEN 97 + d ELSE 22 + d END)::int);
                    q := (q - t) / (36 - t);
                    k := k + 36;
                END LOOP;
                output := output || chr((CASE WHEN q < 26 THEN 97 + q ELSE 22 + q END)::int);
                -- adapt(delta, h + 1, first time = (h = b)): damp 700, skew 38
                delta := CASE WHEN h = b THEN delta / 700 ELSE delta / 2 END;
                delta := delta + delta / (h + 1);
                k := 0;
                WHILE delta > 455 LOOP  -- ((base - tmin) * tmax) / 2
                    delta := delta / 35;
                    k := k + 36;
                END LOOP;
                bias := k + (36 * delta) / (delta + 38);
                delta := 0;
                h := h + 1;
            END IF;
        END LOOP;
        delta := delta + 1;
        n := n + 1;
    END LOOP;
    RETURN output;
END
$$;

CREATE FUNCTION relate_0030_domain(name text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT string_agg(
               CASE WHEN octet_length(label) = length(label) THEN label
                    ELSE 'xn--' || relate_0030_punycode(normalize(label, NFC)) END,
               '.' ORDER BY i)
      FROM regexp_split_to_table(name, '\.') WITH ORDINALITY AS t(label, i)
$$;

-- An address: the local part as it is (RFC 6531 keeps it UTF-8), the domain as A-labels.
CREATE FUNCTION relate_0030_address(address text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT CASE WHEN strpos(address, '@') = 0 THEN relate_0030_domain(address)
                ELSE split_part(address, '@', 1) || '@' || relate_0030_domain(split_part(address, '@', 2)) END
$$;

CREATE FUNCTION relate_0030_needs(address text) RETURNS boolean
LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT octet_length(split_part(address, '@', -1)) <> length(split_part(address, '@', -1))
$$;

DO $$
DECLARE
    clash text;
BEGIN
    SELECT string_agg(format('%s and %s', d.name, o.name), '; ') INTO clash
      FROM domains d JOIN domains o ON o.name = relate_0030_domain(d.name) AND o.id <> d.id
     WHERE relate_0030_needs(d.name);
    IF clash IS NOT NULL THEN
        RAISE EXCEPTION 'hosted domains that are one domain in IDNA: %; remove one of each pair (relatectl domain remove), then run relatectl db migrate', clash;
    END IF;
    SELECT string_agg(format('%s and %s', a.address, o.address), '; ') INTO clash
      FROM addresses a JOIN addresses o ON o.address = relate_0030_address(a.address) AND o.id <> a.id
     WHERE relate_0030_needs(a.address);
    IF clash IS NOT NULL THEN
        RAISE EXCEPTION 'addresses that are one address in IDNA: %; remove one of each pair (relatectl alias remove or user remove), then run relatectl db migrate', clash;
    END IF;
END
$$;

UPDATE domains SET name = relate_0030_domain(name) WHERE relate_0030_needs(name);
UPDATE users SET address = relate_0030_address(address) WHERE relate_0030_needs(address);
UPDATE addresses SET address = relate_0030_address(address) WHERE relate_0030_needs(address);
-- A user's allow/block entry written both ways: the one already in A-labels stays.
DELETE FROM sender_rules r
 WHERE relate_0030_needs(r.pattern)
   AND EXISTS (SELECT 1 FROM sender_rules o
                WHERE o.user_id = r.user_id AND o.pattern = relate_0030_address(r.pattern) AND o.id <> r.id);
UPDATE sender_rules SET pattern = relate_0030_address(pattern) WHERE relate_0030_needs(pattern);

-- From now on only A-labels: a path that forgot to map a name fails here rather than hosting it twice.
ALTER TABLE domains ADD CONSTRAINT domains_name_a_labels CHECK (octet_length(name) = length(name));

DROP FUNCTION relate_0030_needs(text);
DROP FUNCTION relate_0030_address(text);
DROP FUNCTION relate_0030_domain(text);
DROP FUNCTION relate_0030_punycode(text);
