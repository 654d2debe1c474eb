-- DKIM key rotation: a new key waits (pending) until its record is seen in DNS, while the domain's current
-- key keeps signing; then it becomes the active key and the old one is kept as previous until retired.
-- activated_at: when a key started signing (NULL: pending, never yet); checked_at: the last DNS look.
ALTER TABLE dkim_keys
    ADD COLUMN activated_at timestamptz,
    ADD COLUMN checked_at timestamptz;
UPDATE dkim_keys SET activated_at = created_at;  -- every key so far signed when it was made
